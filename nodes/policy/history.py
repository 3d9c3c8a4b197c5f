"""Defence against differencing: refuse a release that isolates fewer than *k* rows.

Two aggregates over row sets ``S`` and ``T`` reveal, by subtraction, the aggregate over
``S Δ T``.  Small groups are already suppressed (policy ``min_group_size``), but two
large groups that differ by one row leak that row.  The node therefore remembers the row
sets it released to each requester per dataset and refuses a group whose row set differs
from an earlier one by at least one and fewer than *k* rows.  Identical row sets are
allowed (they reveal nothing new).

Row identity is SQLite's ``rowid`` or the table's single-column primary key.  The history
is kept in the node's state directory (compressed sorted id arrays), bounded per
(requester, dataset) to the most recent :data:`MAX_HISTORY` releases.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nodes.errors import PermissionDenied

__all__ = ["MAX_HISTORY", "DifferencingGuard"]

MAX_HISTORY = 256
IdArray = npt.NDArray[np.int64]


def _pack(ids: IdArray) -> bytes:
    return zlib.compress(ids.astype("<i8").tobytes(), 1)


def _unpack(blob: bytes) -> IdArray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i8").astype(np.int64)


class DifferencingGuard:
    """Released row sets per (requester, dataset), persisted in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS released (requester TEXT NOT NULL, dataset TEXT NOT NULL, "
            "size INTEGER NOT NULL, ids BLOB NOT NULL)"
        )
        self._lock = threading.Lock()

    def check(self, requester: str, dataset: str, groups: Sequence[IdArray], k: int) -> None:
        """Raise :class:`PermissionDenied` if a group differs from a released set by 1..k-1 rows."""
        if k <= 1:
            return
        with self._lock:
            rows = self._db.execute(
                "SELECT size, ids FROM released WHERE requester = ? AND dataset = ? "
                "ORDER BY rowid DESC LIMIT ?",
                (requester, dataset, MAX_HISTORY),
            ).fetchall()
        for ids in groups:
            for size, blob in rows:
                if abs(size - len(ids)) >= k:
                    continue  # |S Δ T| >= ||S| - |T||: far enough apart
                diff = len(np.setxor1d(ids, _unpack(blob), assume_unique=True))
                if 0 < diff < k:
                    raise PermissionDenied(
                        f"the query differs from an earlier release by {diff} row(s), fewer "
                        f"than the minimum group size {k} (differencing)"
                    )

    def remember(self, requester: str, dataset: str, groups: Iterable[IdArray]) -> None:
        """Record released row sets."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO released (requester, dataset, size, ids) VALUES (?, ?, ?, ?)",
                [(requester, dataset, len(ids), _pack(ids)) for ids in groups if len(ids)],
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
