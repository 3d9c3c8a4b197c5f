"""Replay protection: every (requester, nonce) is accepted once while its request is valid.

Nonces are kept in a SQLite file under the node's state directory so a restart does not
reopen the replay window; entries past their expiry are pruned.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["NonceStore"]


class NonceStore:
    """A persistent set of seen nonces."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (requester TEXT NOT NULL, nonce BLOB NOT NULL, "
            "expires_ms INTEGER NOT NULL, PRIMARY KEY (requester, nonce))"
        )
        self._lock = threading.Lock()
        self._inserts = 0

    def claim(self, requester: str, nonce: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record the nonce; return ``False`` if it was seen before (a replay)."""
        with self._lock:
            self._inserts += 1
            if self._inserts % 1000 == 0:
                self._db.execute("DELETE FROM nonces WHERE expires_ms < ?", (now_ms,))
            try:
                self._db.execute(
                    "INSERT INTO nonces (requester, nonce, expires_ms) VALUES (?, ?, ?)",
                    (requester, nonce, expires_ms),
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
