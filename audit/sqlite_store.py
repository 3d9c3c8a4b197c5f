"""SQLite ledger store: WAL journal, ``synchronous=FULL``, one writer process (file lock).

Every ``append`` is one transaction, committed and fsynced before it returns, so an
acknowledged entry survives a crash of the process (or of the machine, as far as the disk
honours fsync).  Interior Merkle nodes of level >= 4 live in ``nodes`` keyed by
``(level << 56) | index``; leaf hashes (level 0) sit beside the leaves.  Private-part
openings (:mod:`audit.private`) live in ``private``, written in the entries' transaction.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from audit.errors import LedgerError
from audit.merkle import NodeID, perfect_root

__all__ = ["MIN_STORED_LEVEL", "SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL,
                                    hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS private (idx INTEGER PRIMARY KEY, opening BLOB NOT NULL);
"""
_LEVEL_SHIFT = 56
#: Interior nodes below this level are not stored (a 16-leaf subtree is cheap to rehash);
#: this keeps one row per entry instead of two.
MIN_STORED_LEVEL = 4
_CHUNK = 500  # bound on SQL variables per statement


def _node_key(node: NodeID) -> int:
    return (node[0] << _LEVEL_SHIFT) | node[1]


class SQLiteStore:
    """A :class:`audit.store.LedgerStore` in one SQLite file.

    Parameters
    ----------
    path : Path
        The database file; created if missing.  A ``<path>.lock`` file guards against a
        second writer (in this or another process).
    readonly : bool
        Open for reading only (no lock, no writes).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()
        self._private_table: bool | None = None
        if not readonly:
            self._lock_fd = _acquire_lock(self.path)
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self._db = sqlite3.connect(
                uri, uri=readonly, isolation_level=None, check_same_thread=False
            )
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._release_lock()
            raise LedgerError(f"cannot open ledger store {self.path.name}: {exc}") from exc

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def size(self) -> int:
        """Return the number of committed entries."""
        with self._mutex:
            row = self._db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> bytes | None:
        """Return a metadata value, or ``None`` if unset."""
        with self._mutex:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        """Durably set a metadata value."""
        with self._mutex:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def append(
        self,
        first_index: int,
        leaves: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        nodes: Sequence[tuple[NodeID, bytes]],
        private: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        """Durably commit a batch of entries and the interior nodes they complete.

        ``private`` holds the ``(index, opening)`` of those entries that have a private
        part; everything lands in one transaction.
        """
        rows = zip(range(first_index, first_index + len(leaves)), leaves, leaf_hashes, strict=True)
        with self._mutex:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO entries VALUES (?, ?, ?)", rows)
                db.executemany(
                    "INSERT INTO nodes VALUES (?, ?)",
                    [(_node_key(n), h) for n, h in nodes if n[0] >= MIN_STORED_LEVEL],
                )
                if private:
                    db.executemany("INSERT INTO private VALUES (?, ?)", private)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def get_hashes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Return the hash of each complete subtree in ``ids``, in order.

        Subtrees below level :data:`MIN_STORED_LEVEL` are rehashed from their (at most
        eight) leaf hashes; higher ones are read from ``nodes``.
        """
        leaf_ids: set[int] = set()
        node_keys = []
        for lvl, i in ids:
            if lvl < MIN_STORED_LEVEL:
                leaf_ids.update(range(i << lvl, (i + 1) << lvl))
            else:
                node_keys.append(_node_key((lvl, i)))
        leaves: dict[int, bytes] = {}
        nodes: dict[int, bytes] = {}
        with self._mutex:
            for part in _chunks(sorted(leaf_ids)):
                q = f"SELECT idx, hash FROM entries WHERE idx IN ({','.join('?' * len(part))})"
                leaves.update((i, bytes(h)) for i, h in self._db.execute(q, part))
            for part in _chunks(node_keys):
                q = f"SELECT id, hash FROM nodes WHERE id IN ({','.join('?' * len(part))})"
                nodes.update((k, bytes(h)) for k, h in self._db.execute(q, part))
        try:
            return [self._resolve(lvl, i, leaves, nodes) for lvl, i in ids]
        except KeyError as exc:
            raise LedgerError(f"ledger store is missing tree node {exc.args[0]}") from None

    @staticmethod
    def _resolve(lvl: int, i: int, leaves: dict[int, bytes], nodes: dict[int, bytes]) -> bytes:
        if lvl == 0:
            return leaves[i]
        if lvl < MIN_STORED_LEVEL:
            return perfect_root([leaves[j] for j in range(i << lvl, (i + 1) << lvl)])
        return nodes[_node_key((lvl, i))]

    def get_leaves(self, start: int, end: int) -> list[bytes]:
        """Return the leaves ``[start, end)`` (fewer if the log is shorter)."""
        with self._mutex:
            cur = self._db.execute(
                "SELECT leaf FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            )
            return [bytes(r[0]) for r in cur]

    def get_entries(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Return ``(index, leaf, stored leaf hash)`` for ``[start, end)``, as stored."""
        with self._mutex:
            cur = self._db.execute(
                "SELECT idx, leaf, hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            )
            return [(int(i), bytes(leaf), bytes(h)) for i, leaf, h in cur]

    def get_entries_after(self, start: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """Return up to ``limit`` stored ``(index, leaf, hash)`` rows with index >= ``start``."""
        with self._mutex:
            cur = self._db.execute(
                "SELECT idx, leaf, hash FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?",
                (start, limit),
            )
            return [(int(i), bytes(leaf), bytes(h)) for i, leaf, h in cur]

    def get_private(self, start: int, end: int) -> dict[int, bytes]:
        """Return the private-part openings of entries ``[start, end)`` by index."""
        if not self._has_private():
            return {}
        with self._mutex:
            cur = self._db.execute(
                "SELECT idx, opening FROM private WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            )
            return {int(i): bytes(o) for i, o in cur}

    def _has_private(self) -> bool:
        """Whether the ``private`` table exists (a read-only open of an older file)."""
        if self._private_table is None:
            with self._mutex:
                row = self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'private'"
                ).fetchone()
            self._private_table = row is not None
        return self._private_table

    def put_checkpoint(self, size: int, note: bytes, *, replace: bool = False) -> None:
        """Durably store a checkpoint for ``size``; keep an existing one unless ``replace``."""
        verb = "REPLACE" if replace else "IGNORE"
        with self._mutex:
            self._db.execute(f"INSERT OR {verb} INTO checkpoints VALUES (?, ?)", (size, note))

    def get_checkpoints(self) -> list[tuple[int, bytes]]:
        """Return every stored ``(size, note)``, by size."""
        with self._mutex:
            cur = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size")
            return [(int(s), bytes(n)) for s, n in cur]

    def close(self) -> None:
        """Close the database and release the writer lock."""
        with self._mutex:
            self._db.close()
        self._release_lock()


def _chunks(items: list[int]) -> list[list[int]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _acquire_lock(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LedgerError(f"ledger {path.name} is open by another writer") from None
    return fd
