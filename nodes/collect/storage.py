"""Durable state of one collection task at one aggregator (SQLite, WAL, fsync per commit).

``state_dir/collect/<task>.sqlite`` holds everything the aggregator must not forget:

======================  =======  ===============================================================
table                   role     what
======================  =======  ===============================================================
``reports``             Leader   every accepted report: pending, in a job, or done (shares dropped,
                                 ID and digest kept so a replay is recognised forever)
``jobs``                Leader   aggregation jobs sent and not yet committed (the exact request,
                                 resent after a crash or while the Helper is down)
``seen``                Helper   report IDs verified here (DAP §2.3 replay protection)
``helper_jobs``         Helper   each job's request digest and response (a retry gets the same)
``windows``             both     per window: state, aggregate share, count, checksum, rejections
``upload_rejected``     Leader   upload refusals since the last window entry (then ledgered)
``meta``                both     the task ID the file belongs to; the watermark
======================  =======  ===============================================================

Every method is one transaction (:class:`nodes.collect.windows.WindowStore` holds the
file, the windows and the meta); callers run them off the event loop. An upload is
acknowledged only once its transaction is durable (``synchronous=FULL``), so a report
the Leader accepted survives a crash and is aggregated later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from nodes.collect.windows import WindowDelta, WindowRow, WindowStore

__all__ = ["PENDING", "CollectStore", "ReportRow", "WindowDelta", "WindowRow"]

PENDING, IN_JOB, DONE = 0, 1, 2


@dataclass(frozen=True)
class ReportRow:
    """A stored report that still has its shares (pending or in a job)."""

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    enc: bytes
    ciphertext: bytes


class CollectStore(WindowStore):
    """One task's SQLite file: the windows, and the reports and jobs of each role."""

    # -- Leader: uploads -----------------------------------------------------------------
    def insert_reports(
        self,
        rows: Sequence[tuple[bytes, int, int, bytes, tuple[bytes, ...]]],
        refused: Sequence[str],
        now_ms: int,
    ) -> list[str]:
        """Store reports ``(id, time, window, digest, (public, leader, enc, ct))`` durably.

        Returns one status per row: ``accepted``, ``duplicate`` (the same report again),
        ``report_replayed`` (the ID of another report) or ``batch_collected``. Every
        refusal, and the ``refused`` reasons found before (malformed, out of range), is
        counted for the next window entry; the watermark moves to the newest time stored.
        """
        out: list[str] = []
        with self._tx() as db:
            closed = {s for (s,) in db.execute("SELECT start FROM windows WHERE state != 'open'")}
            for rid, time, window, digest, shares in rows:
                if window in closed:
                    out.append("batch_collected")
                    continue
                old = db.execute("SELECT digest FROM reports WHERE id = ?", (rid,)).fetchone()
                if old is not None:
                    out.append("duplicate" if bytes(old[0]) == digest else "report_replayed")
                    continue
                db.execute(
                    "INSERT INTO reports (id, time, window, digest, state, public, leader, "
                    "enc, ct) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                    (rid, time, window, digest, *shares),
                )
                db.execute(  # a new window, or one more report for it: it stays open longer
                    "INSERT INTO windows (start, state, last_seen_ms, checksum) "
                    "VALUES (?, 'open', ?, ?) ON CONFLICT (start) DO UPDATE SET "
                    "last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
                    (window, now_ms, bytes(32)),
                )
                out.append("accepted")
            newest = max(
                (r[1] for r, o in zip(rows, out, strict=True) if o == "accepted"), default=0
            )
            db.execute(
                "INSERT INTO meta VALUES ('watermark', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (newest,),
            )
            for reason in [*refused, *(o for o in out if o not in ("accepted", "duplicate"))]:
                db.execute(
                    "INSERT INTO upload_rejected VALUES (?, 1) "
                    "ON CONFLICT (reason) DO UPDATE SET count = count + 1",
                    (reason,),
                )
        return out

    def upload_rejections(self) -> dict[str, int]:
        """Upload refusals counted since the last window entry."""
        with self._lock:
            return dict(self._db.execute("SELECT reason, count FROM upload_rejected").fetchall())

    def forget_upload_rejections(self, recorded: dict[str, int]) -> None:
        """Subtract refusals a window entry has recorded."""
        with self._tx() as db:
            for reason, n in recorded.items():
                db.execute(
                    "UPDATE upload_rejected SET count = count - ? WHERE reason = ?", (n, reason)
                )
            db.execute("DELETE FROM upload_rejected WHERE count <= 0")

    # -- Leader: aggregation jobs --------------------------------------------------------
    def pending(self, limit: int) -> list[ReportRow]:
        """The oldest reports not yet in a job."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, time, public, leader, enc, ct FROM reports WHERE state = 0 "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [ReportRow(*r) for r in rows]

    def start_job(
        self,
        job_id: bytes,
        request: bytes,
        sent: Sequence[bytes],
        rejected: Sequence[bytes],
        deltas: dict[int, WindowDelta],
    ) -> None:
        """Record a job before it is sent; reports the Leader rejected itself are done."""
        with self._tx() as db:
            if sent:
                db.execute("INSERT INTO jobs VALUES (?, ?)", (job_id, request))
                db.executemany(
                    "UPDATE reports SET state = 1, job = ? WHERE id = ?",
                    [(job_id, r) for r in sent],
                )
            self._done(db, rejected)
            self._merge(db, deltas)

    def open_jobs(self) -> list[tuple[bytes, bytes]]:
        """Jobs sent and not committed: ``(job_id, request)``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, request FROM jobs ORDER BY rowid").fetchall()
        return [(bytes(a), bytes(b)) for a, b in rows]

    def job_reports(self, job_id: bytes) -> list[ReportRow]:
        """A job's reports, in the order they were taken."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, time, public, leader, enc, ct FROM reports WHERE job = ? "
                "AND state = 1 ORDER BY seq",
                (job_id,),
            ).fetchall()
        return [ReportRow(*r) for r in rows]

    def finish_job(
        self, job_id: bytes, ids: Sequence[bytes], deltas: dict[int, WindowDelta]
    ) -> None:
        """Commit a job: window deltas merged, its reports done, the job forgotten."""
        with self._tx() as db:
            self._done(db, ids)
            self._merge(db, deltas)
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _done(self, db: sqlite3.Connection, ids: Sequence[bytes]) -> None:
        db.executemany(
            "UPDATE reports SET state = 2, job = NULL, public = NULL, leader = NULL, "
            "enc = NULL, ct = NULL WHERE id = ?",
            [(r,) for r in ids],
        )

    def unfinished(self, window: int) -> int:
        """Reports of ``window`` still pending or in a job."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM reports WHERE state < 2 AND window = ?", (window,)
            ).fetchone()
        return int(n)

    # -- Helper --------------------------------------------------------------------------
    def helper_job(self, job_id: bytes) -> tuple[bytes, bytes] | None:
        """A processed job's ``(request digest, response)``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT digest, response FROM helper_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def seen_among(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``ids`` were verified here before."""
        out: set[bytes] = set()
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                q = f"SELECT id FROM seen WHERE id IN ({marks})"
                out.update(bytes(r[0]) for r in self._db.execute(q, chunk))
        return out

    def commit_helper_job(
        self,
        job_id: bytes,
        digest: bytes,
        response: bytes,
        seen: Sequence[bytes],
        deltas: dict[int, WindowDelta],
        now_ms: int,
    ) -> None:
        """Commit a job at the Helper: its response, the IDs it verified, window deltas."""
        with self._tx() as db:
            db.execute("INSERT INTO helper_jobs VALUES (?, ?, ?)", (job_id, digest, response))
            db.executemany("INSERT INTO seen VALUES (?)", [(r,) for r in seen])
            for w in deltas:
                db.execute(
                    "INSERT OR IGNORE INTO windows (start, state, last_seen_ms, checksum) "
                    "VALUES (?, 'open', ?, ?)",
                    (w, now_ms, bytes(32)),
                )
            self._merge(db, deltas)
