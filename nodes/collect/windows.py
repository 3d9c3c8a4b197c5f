"""A task's database, the part both aggregators share: windows, meta, transactions.

:class:`WindowStore` opens the task's database (:mod:`nodes.collect.db`: its SQLite file,
or its schema in the aggregator's PostgreSQL database), refuses one written for another
task ID, and keeps one row per window -- its state
(``open``, ``closing``, ``closed``), aggregate share, report count, checksum, rejections
by reason and, once closed, the digests and ledger index of its entry.
:class:`nodes.collect.storage.CollectStore` adds the reports and jobs of each role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datafed.errors import ConfigError
from datafed.protocols import Prio3
from nodes.collect.db import Cursor, Db

__all__ = ["WindowDelta", "WindowRow", "WindowStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS task (id BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
  seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, time INTEGER NOT NULL,
  win INTEGER NOT NULL, digest BLOB NOT NULL, state INTEGER NOT NULL, job BLOB,
  public BLOB, leader BLOB, enc BLOB, ct BLOB);
CREATE INDEX IF NOT EXISTS reports_open ON reports (state, win) WHERE state < 2;
CREATE INDEX IF NOT EXISTS reports_job ON reports (job) WHERE state = 1;
CREATE INDEX IF NOT EXISTS reports_pending ON reports (state, seq) WHERE state = 0;
CREATE TABLE IF NOT EXISTS jobs (
  id BLOB PRIMARY KEY, owner TEXT NOT NULL, generation INTEGER NOT NULL,
  lease_until_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY, job BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS helper_jobs (
  id BLOB PRIMARY KEY, digest BLOB NOT NULL, response BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS helper_queue (
  id BLOB PRIMARY KEY, request BLOB NOT NULL, owner TEXT NOT NULL,
  lease_until_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
  start INTEGER PRIMARY KEY, state TEXT NOT NULL, last_seen_ms INTEGER NOT NULL,
  agg BLOB, count INTEGER NOT NULL DEFAULT 0, checksum BLOB NOT NULL,
  rejected TEXT NOT NULL DEFAULT '{}', share_digest TEXT NOT NULL DEFAULT '',
  close_digest TEXT NOT NULL DEFAULT '', releasable INTEGER NOT NULL DEFAULT 0,
  close_index INTEGER NOT NULL DEFAULT -1);
CREATE TABLE IF NOT EXISTS upload_rejected (reason TEXT PRIMARY KEY, count INTEGER NOT NULL)
"""


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
    last_seen_ms: int
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


class WindowStore:
    """The windows and meta of one task's database (see module docs).

    Parameters
    ----------
    db : Db
        The task's database (:func:`nodes.collect.db.open_db`), its tables created.
    task_id : bytes
        The task's ID; a database made for another task ID is refused.
    vdaf : Prio3
        The task's VDAF (to merge aggregate shares).
    """

    def __init__(self, db: Db, task_id: bytes, vdaf: Prio3[Any, Any]) -> None:
        self.db = db
        self._vdaf = vdaf
        with db.tx() as cur:
            row = cur.execute("SELECT id FROM task").fetchone()
            if row is None:
                cur.execute("INSERT INTO task VALUES (?)", (task_id,))
        if row is not None and bytes(row[0]) != task_id:
            db.close()
            raise ConfigError(
                f"{getattr(db, 'where', 'the database')} belongs to another configuration of "
                "this task (its task ID differs); a changed task needs a new name"
            )

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def _tx(self) -> Any:
        return self.db.tx()

    def _read(self) -> Any:
        return self.db.read()

    def get_meta_int(self, key: str, default: int) -> int:
        """An integer kept in ``meta`` (the watermark)."""
        with self._read() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def set_meta_int(self, key: str, value: int) -> None:
        """Keep an integer in ``meta``."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
                (key, value, value),
            )

    # -- windows -------------------------------------------------------------------------
    def _merge(self, db: Cursor, deltas: dict[int, WindowDelta]) -> None:
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        for w, d in sorted(deltas.items()):  # one order everywhere: no deadlock between workers
            row = db.execute(
                "SELECT agg, count, checksum, rejected FROM windows WHERE start = ?" + lock, (w,)
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
            "SELECT start, state, last_seen_ms, agg, count, checksum, rejected, share_digest, "
            f"close_digest, releasable, close_index FROM windows WHERE {where} ORDER BY start"
        )
        with self._read() as cur:
            rows = cur.execute(q, tuple(args)).fetchall()
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
        with self._read() as cur:
            return self.closed_in(cur, wanted)

    def closed_in(self, cur: Cursor, starts: Sequence[int], *, lock: bool = False) -> set[int]:
        """:meth:`closed_among` inside a transaction; ``lock``: hold the rows for update.

        PostgreSQL only; the rows are taken in window order, as every writer takes them.
        """
        out: set[int] = set()
        share = " FOR UPDATE" if lock and self.db.dialect == "postgresql" else ""
        for i in range(0, len(starts), 500):
            chunk = list(starts[i : i + 500])
            marks = ",".join("?" * len(chunk))
            q = f"SELECT start, state FROM windows WHERE start IN ({marks})" + share
            out.update(r[0] for r in cur.execute(q, chunk).fetchall() if r[1] == "closed")
        return out

    def ensure_window(self, start: int, now_ms: int) -> None:
        """Create an empty open window (a window closes even without reports)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO windows (start, state, last_seen_ms, checksum) "
                "VALUES (?, 'open', ?, ?) ON CONFLICT (start) DO NOTHING",
                (start, now_ms, bytes(32)),
            )

    def mark_due(self, starts: Sequence[int], frontier: int, now_ms: int) -> None:
        """Make windows ``starts`` closing (a row for each, reports or not); set the frontier.

        One transaction, windows in order (as every writer takes them). A window already
        closing or closed stays so; ``frontier`` is kept in ``meta`` (the next window due).
        """
        with self._tx() as db:
            for start in sorted(starts):
                db.execute(
                    "INSERT INTO windows (start, state, last_seen_ms, checksum) "
                    "VALUES (?, 'closing', ?, ?) ON CONFLICT (start) DO NOTHING",
                    (start, now_ms, bytes(32)),
                )
                db.execute(
                    "UPDATE windows SET state = 'closing' WHERE start = ? AND state = 'open'",
                    (start,),
                )
            db.execute(
                "INSERT INTO meta VALUES ('frontier', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = max(meta.value, excluded.value)",
                (frontier,),
            )

    def first_window(self) -> int | None:
        """The oldest window that has a row (a task without a start begins there)."""
        with self._read() as db:
            row = db.execute("SELECT min(start) FROM windows").fetchone()
        return None if row is None or row[0] is None else int(row[0])

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
