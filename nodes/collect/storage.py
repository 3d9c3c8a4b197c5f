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

Every method is one transaction; callers run them off the event loop. An upload is
acknowledged only once its transaction is durable (``synchronous=FULL``), so a report
the Leader accepted survives a crash and is aggregated later.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafed.protocols import Prio3

__all__ = ["PENDING", "CollectStore", "ReportRow", "WindowDelta", "WindowRow"]

PENDING, IN_JOB, DONE = 0, 1, 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
  seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, time INTEGER NOT NULL,
  window INTEGER NOT NULL, digest BLOB NOT NULL, state INTEGER NOT NULL, job BLOB,
  public BLOB, leader BLOB, enc BLOB, ct BLOB);
CREATE INDEX IF NOT EXISTS reports_open ON reports (state, window) WHERE state < 2;
CREATE TABLE IF NOT EXISTS jobs (id BLOB PRIMARY KEY, request BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS helper_jobs (
  id BLOB PRIMARY KEY, digest BLOB NOT NULL, response BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
  start INTEGER PRIMARY KEY, state TEXT NOT NULL, first_seen_ms INTEGER NOT NULL,
  agg BLOB, count INTEGER NOT NULL DEFAULT 0, checksum BLOB NOT NULL,
  rejected TEXT NOT NULL DEFAULT '{}', share_digest TEXT NOT NULL DEFAULT '',
  close_digest TEXT NOT NULL DEFAULT '', releasable INTEGER NOT NULL DEFAULT 0,
  close_index INTEGER NOT NULL DEFAULT -1);
CREATE TABLE IF NOT EXISTS upload_rejected (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class ReportRow:
    """A stored report that still has its shares (pending or in a job)."""

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    enc: bytes
    ciphertext: bytes


@dataclass
class WindowDelta:
    """What one job adds to one window: output shares, count, checksum, rejections."""

    agg: list[int] | None = None
    count: int = 0
    checksum: bytes = bytes(32)
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowRow:
    """One window as stored."""

    start: int
    state: str  # open | closing | closed
    first_seen_ms: int
    agg: list[int]
    count: int
    checksum: bytes
    rejected: dict[str, int]
    share_digest: str
    close_digest: str
    releasable: bool
    #: The ledger index of the window's close entry (-1 while open).
    close_index: int

    @property
    def rejected_count(self) -> int:
        """Every rejection in the window."""
        return sum(self.rejected.values())


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class CollectStore:
    """One task's SQLite file (see module docs).

    Parameters
    ----------
    path : Path
        The database file (created with its directory).
    task_id : bytes
        The task's ID; a file made for another task ID is refused.
    vdaf : Prio3
        The task's VDAF (to merge aggregate shares).
    """

    def __init__(self, path: Path, task_id: bytes, vdaf: Prio3[Any, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._vdaf = vdaf
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'task_id'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('task_id', ?)", (task_id,))
        elif bytes(row[0]) != task_id:
            raise ValueError(
                f"{path} belongs to another configuration of this task (its task ID differs); "
                "a changed task needs a new name"
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

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
                db.execute(
                    "INSERT OR IGNORE INTO windows (start, state, first_seen_ms, checksum) "
                    "VALUES (?, 'open', ?, ?)",
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

    def get_meta_int(self, key: str, default: int) -> int:
        """An integer kept in ``meta`` (the watermark)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def set_meta_int(self, key: str, value: int) -> None:
        """Keep an integer in ``meta``."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

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
                    "INSERT OR IGNORE INTO windows (start, state, first_seen_ms, checksum) "
                    "VALUES (?, 'open', ?, ?)",
                    (w, now_ms, bytes(32)),
                )
            self._merge(db, deltas)

    # -- windows -------------------------------------------------------------------------
    def _merge(self, db: sqlite3.Connection, deltas: dict[int, WindowDelta]) -> None:
        for w, d in deltas.items():
            row = db.execute(
                "SELECT agg, count, checksum, rejected FROM windows WHERE start = ?", (w,)
            ).fetchone()
            if row is None:
                raise ValueError(f"window {w} has no row")
            agg = self._vdaf.decode_agg_share(bytes(row[0])) if row[0] else self._vdaf.agg_init()
            if d.agg is not None:
                agg = self._vdaf.merge([agg, d.agg])
            rejected = json.loads(row[3])
            for k, v in d.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
            db.execute(
                "UPDATE windows SET agg = ?, count = ?, checksum = ?, rejected = ? WHERE start = ?",
                (
                    self._vdaf.encode_agg_share(agg),
                    row[1] + d.count,
                    _xor(bytes(row[2]), d.checksum),
                    json.dumps(rejected, sort_keys=True),
                    w,
                ),
            )

    def window(self, start: int) -> WindowRow | None:
        """One window, if it has a row."""
        rows = self.windows(where="start = ?", args=(start,))
        return rows[0] if rows else None

    def windows(self, *, where: str = "1", args: Sequence[Any] = ()) -> list[WindowRow]:
        """Windows matching an SQL condition (``where`` is code, never input), oldest first."""
        q = (
            "SELECT start, state, first_seen_ms, agg, count, checksum, rejected, share_digest, "
            f"close_digest, releasable, close_index FROM windows WHERE {where} ORDER BY start"
        )
        with self._lock:
            rows = self._db.execute(q, tuple(args)).fetchall()
        vdaf = self._vdaf
        return [
            WindowRow(
                r[0],
                r[1],
                r[2],
                vdaf.decode_agg_share(bytes(r[3])) if r[3] else vdaf.agg_init(),
                r[4],
                bytes(r[5]),
                json.loads(r[6]),
                r[7],
                r[8],
                bool(r[9]),
                r[10],
            )
            for r in rows
        ]

    def closed_among(self, starts: Iterable[int]) -> set[int]:
        """Which of the window ``starts`` are closed (or closing: no more reports)."""
        wanted = sorted(set(starts))
        out: set[int] = set()
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                q = f"SELECT start FROM windows WHERE state = 'closed' AND start IN ({marks})"
                out.update(r[0] for r in self._db.execute(q, chunk))
        return out

    def ensure_window(self, start: int, now_ms: int) -> None:
        """Create an empty open window (a window closes even without reports)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO windows (start, state, first_seen_ms, checksum) "
                "VALUES (?, 'open', ?, ?)",
                (start, now_ms, bytes(32)),
            )

    def set_state(self, start: int, state: str) -> None:
        """Move a window to ``closing`` (no more uploads) or back."""
        with self._tx() as db:
            db.execute("UPDATE windows SET state = ? WHERE start = ?", (state, start))

    def close_window(
        self,
        start: int,
        *,
        share_digest: str,
        close_digest: str,
        releasable: bool,
        close_index: int,
    ) -> None:
        """Mark a window closed for good, with its ledger entry's index and digests."""
        with self._tx() as db:
            db.execute(
                "UPDATE windows SET state = 'closed', share_digest = ?, close_digest = ?, "
                "releasable = ?, close_index = ? WHERE start = ?",
                (share_digest, close_digest, int(releasable), close_index, start),
            )


class _Tx:
    """``with store._tx() as db``: one locked transaction, committed durably or rolled back."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._lock.release()
