"""Durable state of one collection task at one aggregator (its SQLite file or PG schema).

The task's database (:mod:`nodes.collect.db`) holds everything the aggregator must not
forget:

======================  =======  ===============================================================
table                   role     what
======================  =======  ===============================================================
``reports``             Leader   every accepted report: pending, in a job, or done (shares dropped,
                                 ID and digest kept so a replay is recognised forever)
``jobs``                Leader   aggregation jobs claimed and not yet committed: the worker that
                                 holds each (``owner``), its lease (database clock) and
                                 ``generation``, the fencing token a commit must still hold
``seen``                Helper   report IDs verified here (DAP §2.3 replay protection)
``helper_jobs``         Helper   each job's request digest and response (a retry gets the same)
``windows``             both     per window: state, aggregate share, count, checksum, rejections
``upload_rejected``     Leader   upload refusals since the last window entry (then ledgered)
``outbox``              both     refusals a front end or worker recorded, for ``serve`` to ledger
``meta``, ``task``      both     the watermark; the task ID the database belongs to
======================  =======  ===============================================================

Every method is one transaction; callers run them off the event loop. An upload is
acknowledged only once its transaction is durable, so a report the Leader accepted
survives a crash and is aggregated later. Jobs are **leased**: a worker claims reports
into a job for ``lease_ms`` of database time and renews the lease while it waits on the
Helper; a worker that dies leaves its job to expire, and the next worker takes it over
(:meth:`CollectStore.reclaim_job`) with a new generation, rebuilds the same request from
the same reports (the Leader's first step is deterministic) and resends it -- the Helper
answers a job it ran with the same answer. A commit names the generation it claimed;
one whose job was taken over commits nothing, so a report is counted exactly once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from nodes.collect.db import Cursor
from nodes.collect.queues import QueueStore
from nodes.collect.rows import ReportCols, ReportRow
from nodes.collect.windows import SCHEMA, WindowDelta, WindowRow

__all__ = [
    "CLAIM_SQL",
    "PENDING",
    "SCHEMA",
    "CollectStore",
    "Replayed",
    "ReportCols",
    "ReportRow",
    "WindowDelta",
    "WindowRow",
]

PENDING, IN_JOB, DONE = 0, 1, 2
_COLS = "id, time, public, leader, enc, ct"
#: The oldest pending reports: a search of the ``reports_pending`` index, never a scan of
#: every report ever stored (done reports stay for replay protection).
CLAIM_SQL = "SELECT seq FROM reports WHERE state = 0 ORDER BY seq LIMIT ?"


class Replayed(Exception):
    """Another process verified some of a job's report IDs first (recompute the job)."""

    def __init__(self, ids: set[bytes]) -> None:
        super().__init__(f"{len(ids)} report ID(s) verified concurrently")
        self.ids = ids


class CollectStore(QueueStore):
    """One task's database: the windows, and the reports and jobs of each role.

    Why long: one transaction per method for every step of both roles (uploads, leased
    jobs, the Helper's commits, the outbox) in the one SQL both databases take.
    """

    # -- Leader: uploads -----------------------------------------------------------------
    def insert_reports(
        self,
        rows: Sequence[tuple[bytes, int, int, bytes, tuple[bytes, ...]]],
        refused: Sequence[str],
        now_ms: int | None = None,
    ) -> list[str]:
        """Store reports ``(id, time, window, digest, (public, leader, enc, ct))`` durably.

        Returns one status per row: ``accepted``, ``duplicate`` (the same report again),
        ``report_replayed`` (the ID of another report) or ``batch_collected``. Every
        refusal, and the ``refused`` reasons found before (malformed, out of range), is
        counted for the next window entry; the watermark moves to the newest time stored.
        Two front ends storing the same report at once: the ID's unique index makes one
        wait for the other's commit, and it then finds a duplicate.
        """
        out: list[str] = []
        token = secrets.token_bytes(8)  # marks this transaction's inserts (a claim overwrites)
        with self._tx() as db:
            now = self.db.now_ms(db) if now_ms is None else now_ms
            windows = sorted({r[2] for r in rows})
            self._ensure_windows(db, windows, now)
            closed = self._not_open(db, windows)
            fresh = [r for r in rows if r[2] not in closed]
            inserted = db.executemany(
                "INSERT INTO reports (id, time, win, digest, state, job, public, leader, "
                "enc, ct) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                [(rid, t, w, d, token, *sh) for rid, t, w, d, sh in fresh],
            ).rowcount
            # Every row inserted (the usual case): all accepted, nothing to read back.
            stored = (
                {}
                if fresh and inserted == len(fresh)
                else self._by_id(db, "SELECT id, digest, job FROM reports", [r[0] for r in fresh])
            )
            here: dict[bytes, bytes] = {}  # accepted by this call: an ID twice is one report
            for rid, _, window, digest, _ in rows:
                if window in closed:
                    out.append("batch_collected")
                    continue
                if rid in here:
                    out.append("duplicate" if here[rid] == digest else "report_replayed")
                    continue
                old_digest, job = stored[rid] if stored else (digest, token)
                if job is not None and bytes(job) == token:
                    out.append("accepted")
                    here[rid] = digest
                else:
                    out.append("duplicate" if bytes(old_digest) == digest else "report_replayed")
            refusals = [*refused, *(o for o in out if o not in ("accepted", "duplicate"))]
            self._count_refusals(db, refusals)
            if self.db.dialect == "sqlite":  # one writer: the same commit (one fsync)
                self._seen_windows(db, rows, out, now)
                return out
        # Then, apart (the upload above holds its windows' rows shared; turning that into
        # an update would deadlock two uploads): the windows' last arrival, the watermark.
        # Both only say when a window may close; a crash in between closes it no later.
        with self._tx() as db:
            self._seen_windows(db, rows, out, now)
        return out

    @staticmethod
    def _by_id(db: Cursor, select: str, ids: Sequence[bytes]) -> dict[bytes, tuple[Any, ...]]:
        """``select`` (its first column the ID) of the rows whose ID is among ``ids``."""
        out: dict[bytes, tuple[Any, ...]] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for row in db.execute(f"{select} WHERE id IN ({marks})", chunk).fetchall():
                out[bytes(row[0])] = tuple(row[1:])
        return out

    def _ensure_windows(self, db: Cursor, windows: Sequence[int], now: int) -> None:
        db.executemany(
            "INSERT INTO windows (start, state, last_seen_ms, checksum) VALUES (?, 'open', ?, ?) "
            "ON CONFLICT (start) DO NOTHING",
            [(w, now, bytes(32)) for w in windows],
        )

    def _not_open(self, db: Cursor, windows: Sequence[int]) -> set[int]:
        share = " FOR SHARE" if self.db.dialect == "postgresql" else ""
        out = set()
        for w in windows:  # held until commit: a window cannot start closing under an upload
            row = db.execute("SELECT state FROM windows WHERE start = ?" + share, (w,)).fetchone()
            if row is not None and row[0] != "open":
                out.add(w)
        return out

    def _seen_windows(
        self, db: Cursor, rows: Sequence[tuple[Any, ...]], out: Sequence[str], now: int
    ) -> None:
        accepted = [r for r, o in zip(rows, out, strict=True) if o == "accepted"]
        for w in sorted({r[2] for r in accepted}):  # it stays open longer
            db.execute(
                "UPDATE windows SET last_seen_ms = max(last_seen_ms, ?) WHERE start = ?", (now, w)
            )
        newest = max((r[1] for r in accepted), default=0)
        if newest:  # the task clock (nodes.collect.closer) runs from these two
            for key, value in (("watermark", newest), ("arrival_ms", now)):
                db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = max(meta.value, excluded.value)",
                    (key, value),
                )

    def _count_refusals(self, db: Cursor, reasons: Sequence[str]) -> None:
        counts: dict[str, int] = {}
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
        for reason, n in sorted(counts.items()):
            db.execute(
                "INSERT INTO upload_rejected VALUES (?, ?) "
                "ON CONFLICT (reason) DO UPDATE SET count = upload_rejected.count + ?",
                (reason, n, n),
            )

    def upload_rejections(self) -> dict[str, int]:
        """Upload refusals counted since the last window entry."""
        with self._read() as db:
            rows = db.execute("SELECT reason, count FROM upload_rejected").fetchall()
        return {str(r): int(n) for r, n in rows}

    def forget_upload_rejections(self, recorded: dict[str, int]) -> None:
        """Subtract refusals a window entry has recorded."""
        with self._tx() as db:
            for reason, n in recorded.items():
                db.execute(
                    "UPDATE upload_rejected SET count = count - ? WHERE reason = ?", (n, reason)
                )
            db.execute("DELETE FROM upload_rejected WHERE count <= 0")

    # -- Leader: leased aggregation jobs -------------------------------------------------
    def claim_job(
        self, job_id: bytes, limit: int, owner: str, lease_ms: int
    ) -> tuple[int, ReportCols]:
        """Take up to ``limit`` pending reports, oldest first, into a new leased job.

        Returns ``(generation, rows)``; no rows (and no job) when nothing is pending.
        Two workers claiming at once take different reports (``SKIP LOCKED``).
        """
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self._tx() as db:
            seqs = db.execute(CLAIM_SQL + skip, (limit,)).fetchall()
            if not seqs:
                return 0, ReportCols.of([])
            now = self.db.now_ms(db)
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, 1, ?, ?)", (job_id, owner, now + lease_ms, now)
            )
            rows = []
            for i in range(0, len(seqs), 1000):  # one statement per 1,000, nothing read back
                chunk = [s for (s,) in seqs[i : i + 1000]]
                marks = ",".join("?" * len(chunk))
                rows += db.execute(
                    f"UPDATE reports SET state = 1, job = ? WHERE seq IN ({marks}) "
                    f"RETURNING seq, {_COLS}",
                    [job_id, *chunk],
                ).fetchall()
        rows.sort(key=itemgetter(0))
        return 1, ReportCols.of([r[1:] for r in rows])

    def reclaim_job(self, owner: str, lease_ms: int) -> tuple[bytes, int, ReportCols] | None:
        """Take over one job whose lease ran out (its worker died or stalled), if any.

        Returns ``(job_id, generation, rows)`` with the generation raised: the old holder's
        commit is refused from now on.
        """
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self._read() as db:  # usually none: no write transaction (no lock) for that
            now = self.db.now_ms(db)
            late = db.execute("SELECT 1 FROM jobs WHERE lease_until_ms < ? LIMIT 1", (now,))
            if late.fetchone() is None:
                return None
        with self._tx() as db:
            now = self.db.now_ms(db)
            row = db.execute(
                "SELECT id, generation FROM jobs WHERE lease_until_ms < ? ORDER BY created_ms "
                "LIMIT 1" + skip,
                (now,),
            ).fetchone()
            if row is None:
                return None
            job_id, generation = bytes(row[0]), int(row[1]) + 1
            db.execute(
                "UPDATE jobs SET owner = ?, generation = ?, lease_until_ms = ? WHERE id = ?",
                (owner, generation, now + lease_ms, job_id),
            )
            rows = db.execute(
                f"SELECT {_COLS} FROM reports WHERE job = ? AND state = 1 ORDER BY seq", (job_id,)
            ).fetchall()
        return job_id, generation, ReportCols.of(rows)

    def release_leases(self) -> int:
        """Free every job's lease (one process restarting: no one else holds them)."""
        with self._tx() as db:
            rows = db.execute("UPDATE jobs SET lease_until_ms = 0 RETURNING id").fetchall()
        return len(rows)

    def renew_job(self, job_id: bytes, generation: int, lease_ms: int) -> bool:
        """Extend a job's lease; ``False`` if another worker took it over."""
        with self._tx() as db:
            now = self.db.now_ms(db)
            got = db.execute(
                "UPDATE jobs SET lease_until_ms = ? WHERE id = ? AND generation = ? RETURNING id",
                (now + lease_ms, job_id, generation),
            ).fetchone()
        return got is not None

    def finish_job(self, job_id: bytes, generation: int, deltas: dict[int, WindowDelta]) -> bool:
        """Commit a job: window deltas merged, its reports done, the job forgotten.

        ``False`` (nothing committed) when the job is no longer this generation's.
        """
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        with self._tx() as db:
            row = db.execute(
                "SELECT generation FROM jobs WHERE id = ?" + lock, (job_id,)
            ).fetchone()
            if row is None or int(row[0]) != generation:
                return False
            self._merge(db, deltas)
            db.execute(
                "UPDATE reports SET state = 2, job = NULL, public = NULL, leader = NULL, "
                "enc = NULL, ct = NULL WHERE job = ? AND state = 1",
                (job_id,),
            )
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return True

    def open_jobs(self) -> list[bytes]:
        """Jobs claimed and not committed, oldest first."""
        with self._read() as db:
            rows = db.execute("SELECT id FROM jobs ORDER BY created_ms").fetchall()
        return [bytes(r[0]) for r in rows]

    def unfinished(self, window: int) -> int:
        """Reports of ``window`` still pending or in a job."""
        with self._read() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM reports WHERE state < 2 AND win = ?", (window,)
            ).fetchone()
        return int(n)

    def watermark(self) -> int:
        """The newest report time stored (event time, for closing windows)."""
        return self.get_meta_int("watermark", 0)

    def now_ms(self) -> int:
        """The database's clock (every process of the aggregator reads the same one)."""
        return self.db.clock_ms()

    # -- Helper --------------------------------------------------------------------------
    def helper_job(self, job_id: bytes) -> tuple[bytes, bytes] | None:
        """A processed job's ``(request digest, response)``, if any."""
        with self._read() as db:
            row = db.execute(
                "SELECT digest, response FROM helper_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def seen_among(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``ids`` were verified here before."""
        out: set[bytes] = set()
        with self._read() as db:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                q = f"SELECT id FROM seen WHERE id IN ({marks})"
                out.update(bytes(r[0]) for r in db.execute(q, chunk).fetchall())
        return out

    def commit_helper_job(
        self,
        job_id: bytes,
        digest: bytes,
        response: bytes,
        seen: Sequence[bytes],
        deltas: dict[int, WindowDelta],
        windows: Sequence[int],
    ) -> tuple[bytes, bytes] | None:
        """Commit a job at the Helper: its response, the IDs it verified, window deltas.

        Returns ``None``, or the ``(digest, response)`` another process committed for
        this job first (nothing is written then). Raises :class:`Replayed` when some of
        ``seen`` were verified by another job meanwhile, and :class:`Replayed` with no IDs
        when one of ``windows`` closed meanwhile: nothing is written, recompute the job.
        """
        with self._tx() as db:
            now = self.db.now_ms(db)
            got = db.execute(
                "INSERT INTO helper_jobs VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                (job_id, digest, response),
            ).fetchone()
            if got is None:
                row = db.execute(
                    "SELECT digest, response FROM helper_jobs WHERE id = ?", (job_id,)
                ).fetchone()
                return bytes(row[0]), bytes(row[1])
            self._ensure_windows(db, sorted(set(windows)), now)
            if self.closed_in(db, sorted(set(windows)), lock=True):
                raise Replayed(set())
            inserted = db.executemany(
                "INSERT INTO seen VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                [(r, job_id) for r in seen],
            ).rowcount
            taken: set[bytes] = set()
            if seen and inserted != len(seen):  # some IDs were there already: whose?
                owners = self._by_id(db, "SELECT id, job FROM seen", list(seen))
                taken = {r for r in seen if bytes(owners[r][0]) != job_id}
            if taken:  # verified by another job first (that process committed before us)
                raise Replayed(taken)
            self._merge(db, deltas)
        return None
