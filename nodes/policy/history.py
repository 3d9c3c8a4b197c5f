"""The differencing defence for exact (non-DP) datasets: near-duplicate row sets get old answers.

Two exact aggregates over row sets ``S`` and ``T`` reveal, by subtraction, the aggregate
over ``S Δ T``; when ``0 < |S Δ T| < k`` that isolates fewer than *k* rows. Refusing such
a release would itself be an oracle (the refusal tells whether the probe's extra predicate
matched a row), so this defence never refuses: a group whose row set differs from an
earlier released one by 1..k-1 rows is answered, component by component, with the value
released for that earlier set. Whether or not the probe matched a row, the analyst gets
the same numbers (``docs/invisibility.md``).

- **Atomic**: the check and the remembering happen in one critical section per dataset,
  so concurrent near-duplicate queries cannot both be answered fresh.
- **Spans requesters**: the history is per dataset, whoever asked.
- **Not flushable**: nothing is evicted. Each released group costs one fixed-size sketch
  (an invertible Bloom lookup table of :data:`CELLS` cells over the row ids, keyed by a
  node secret), so the history grows by about 5 KB per released group, whatever its size.
- **Limits**: differences of up to :data:`MAX_K` - 1 rows are found (larger ``k`` is
  treated as :data:`MAX_K`); row identity needs a stable row id (SQLite ``rowid`` or an
  integer primary key). It does not stop trackers that combine several large, mutually
  distant sets (Denning et al. 1979): person-level datasets must use differential
  privacy, which the node enforces (``person_level``).

The sketch: each id goes to one cell in each of three partitions; a cell holds the count,
the XOR of ids and the XOR of a keyed check hash. Subtracting two sketches leaves the
sketch of ``S Δ T``, which peels to its elements when they are few (Goodrich and
Mitzenmacher, "Invertible Bloom Lookup Tables", 2011; Eppstein et al., "What's the
difference?", SIGCOMM 2011).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CELLS", "MAX_K", "ReleaseHistory", "ReleasedGroup", "sketch", "sketch_distance"]

#: Cells per partition; three partitions.
PART = 64
CELLS = 3 * PART
#: Largest difference (exclusive) the sketch decodes reliably (cells/difference > 1.9).
MAX_K = 50
_DTYPE = np.dtype([("count", "<i8"), ("ids", "<u8"), ("check", "<u8")])
IdArray = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def _mix(x: U64) -> U64:
    """splitmix64's finaliser (Steele, Lea and Flood 2014): a bijection on 64-bit words."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _keys(secret: bytes) -> U64:
    return np.frombuffer(secret[:32], dtype="<u8").astype(np.uint64)


def sketch(ids: IdArray, secret: bytes) -> npt.NDArray[np.void]:
    """The keyed IBLT of a set of row ids (distinct int64)."""
    k = _keys(secret)
    u = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    check = _mix(u ^ k[3])
    cells = np.zeros(CELLS, dtype=_DTYPE)
    for j in range(3):
        where = (_mix(u ^ k[j]) % np.uint64(PART)).astype(np.int64) + j * PART
        np.add.at(cells["count"], where, 1)
        np.bitwise_xor.at(cells["ids"], where, u)
        np.bitwise_xor.at(cells["check"], where, check)
    return cells


def sketch_distance(
    a: npt.NDArray[np.void], b: npt.NDArray[np.void], secret: bytes, limit: int = CELLS
) -> int | None:
    """``|S Δ T|`` from two sketches if it is below ``limit``, else ``None``.

    Each differing row touches three cells, so a difference below ``limit`` leaves fewer
    than ``3 * limit`` non-empty cells: anything with more is far apart at once. Otherwise
    the difference is peeled, at most ``limit`` rows.
    """
    count = a["count"] - b["count"]
    ids = a["ids"] ^ b["ids"]
    check = a["check"] ^ b["check"]
    if np.count_nonzero((count != 0) | (ids != 0) | (check != 0)) >= 3 * limit:
        return None
    k = _keys(secret)
    found = 0
    while True:
        pure = np.flatnonzero((np.abs(count) == 1) & (check == _mix(ids ^ k[3])))
        if pure.size == 0:
            break
        c = int(pure[0])
        value = np.asarray([ids[c]], dtype=np.uint64)
        sign = int(count[c])
        vcheck = _mix(value ^ k[3])[0]
        for j in range(3):
            cell = int((_mix(value ^ k[j]) % np.uint64(PART))[0]) + j * PART
            count[cell] -= sign
            ids[cell] ^= value[0]
            check[cell] ^= vcheck
        found += 1
        if found >= limit:
            return None
    if count.any() or ids.any() or check.any():
        return None
    return found


def _near(mine: npt.NDArray[np.void], blobs: list[bytes], limit: int) -> npt.NDArray[np.bool_]:
    """Which stored sketches could be fewer than ``limit`` rows from ``mine`` (vectorised)."""
    if not blobs:
        return np.zeros(0, dtype=bool)
    theirs = np.frombuffer(b"".join(blobs), dtype=_DTYPE).reshape(len(blobs), CELLS)
    busy = (
        (theirs["count"] != mine["count"])
        | (theirs["ids"] != mine["ids"])
        | (theirs["check"] != mine["check"])
    )
    near: npt.NDArray[np.bool_] = np.count_nonzero(busy, axis=1) < 3 * limit
    return near


@dataclass(frozen=True)
class ReleasedGroup:
    """One group about to be released: its row ids and its component values."""

    ids: IdArray
    values: Mapping[str, int]


class ReleaseHistory:
    """Released row sets per dataset, as sketches with their released values (SQLite).

    Parameters
    ----------
    path
        The history database (in the node's state directory); a secret for the sketch
        hashes is created beside it on first use.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key_file = path.with_suffix(".key")
        if not key_file.exists():
            key_file.write_bytes(secrets.token_bytes(32))
            key_file.chmod(0o600)
        self._secret = key_file.read_bytes()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS released (id INTEGER PRIMARY KEY, dataset TEXT NOT NULL,"
            " size INTEGER NOT NULL, sketch BLOB NOT NULL, released TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS released_by_size ON released (dataset, size)")
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        #: One connection: its transactions (one per release) are taken one at a time.
        self._writes = threading.Lock()

    def _lock(self, dataset: str) -> threading.Lock:
        with self._guard:
            return self._locks[dataset]

    def settle(self, dataset: str, k: int, groups: Sequence[ReleasedGroup]) -> list[dict[str, int]]:
        """The values to release for each group, remembering what is released fresh.

        A component whose group's row set differs from an earlier released set by 1..k-1
        rows gets that earlier set's value (the earliest such release); every other
        component is released as computed and remembered. One critical section per
        dataset covers the look-up and the remembering.
        """
        k = min(k, MAX_K)
        out = []
        with self._lock(dataset), self._writes:
            self._db.execute("BEGIN IMMEDIATE")  # one durable commit per release, not per group
            try:
                for group in groups:
                    out.append(self._settle_one(dataset, k, group))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return out

    def _settle_one(self, dataset: str, k: int, group: ReleasedGroup) -> dict[str, int]:
        values = dict(group.values)
        size = len(group.ids)
        if k <= 1 or size == 0:
            return values
        mine = sketch(group.ids, self._secret)
        rows = self._db.execute(
            "SELECT size, sketch, released FROM released WHERE dataset = ? "
            "AND size > ? AND size < ? ORDER BY id",
            (dataset, size - k, size + k),
        ).fetchall()
        substituted: set[str] = set()
        identical = False
        close = _near(mine, [blob for _, blob, _ in rows], k)
        for (_, blob, released), maybe in zip(rows, close, strict=True):
            if not maybe:
                continue
            d = sketch_distance(mine, np.frombuffer(blob, dtype=_DTYPE), self._secret, limit=k)
            if d == 0:
                identical = True
            elif d is not None and d < k:
                earlier: dict[str, int] = json.loads(released)
                for label in values.keys() - substituted:
                    if label in earlier:
                        values[label] = earlier[label]
                        substituted.add(label)
        fresh = {label: v for label, v in values.items() if label not in substituted}
        if fresh and not identical:
            self._db.execute(
                "INSERT INTO released (dataset, size, sketch, released) VALUES (?, ?, ?, ?)",
                (dataset, size, mine.tobytes(), json.dumps(fresh, sort_keys=True)),
            )
        return values

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM released").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._guard:
            self._db.close()
