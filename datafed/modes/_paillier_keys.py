"""Analysts' Paillier public keys at a node: a cache bounded in bytes, keys and time.

Encrypting under an analyst's key is fast only with the key's DJN fixed-base table
(:mod:`datafed.hazmat._djn`), and the table is large: measured 53 MiB for a 2048-bit
modulus, 65 MiB at 3072 and 257 MiB at 8192 with the C loop's array of limbs (70, 77 and
277 MiB as Python objects; ``docs/policy.md#limits``; the table budget of the hazmat
module is exceeded above 3072 bits, where windows stay at 8 bits). A node that kept a
table for every modulus it was sent could be grown by one analyst sending fresh moduli.
So :class:`PaillierKeyCache`:

- caches a key on its *second* use by the same requester; a first use (and any key the
  cache cannot hold) gets a one-off key with a narrow table (window 5: about 1/20 of
  the memory, ~2x slower per encryption), freed with its answer -- so fresh moduli build
  no large table at all; a cached key's wide table is built on a thread of its own, the
  answers in the meantime using a narrow one, so no answer waits for it;
- holds at most ``per_requester`` keys of one requester: caching a new key evicts that
  requester's own least recently used idle key, never another requester's;
- holds at most ``max_bytes`` of tables in all, estimated *before* they are built
  (:func:`table_bytes`); idle keys older than ``idle_s`` make room, nothing else does;
- never evicts a key in use (so every cached table is counted while it exists).

Memory for Paillier keys is thus at most ``max_bytes`` plus one narrow table per
answer being computed. The node sets the limits from ``[limits]`` in ``node.toml``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gmpy2

from datafed.hazmat import (
    FixedBaseTable,
    PaillierPublicKey,
    entry_overhead_bytes,
    exponent_bits,
    window_bits,
)

__all__ = [
    "CACHED_WINDOW",
    "KEY_CACHE",
    "ONE_OFF_WINDOW",
    "POOL_SIZE",
    "PaillierKeyCache",
    "table_bytes",
]

#: Window of a one-off key's table (2048 bits: ~1.4 MiB, built in ~0.1 s).
ONE_OFF_WINDOW = 5
#: Window of a cached key's table. An answer is a handful of ciphertexts (a few per
#: hundred groups), so the 10-bit windows of bulk encryption (103 products per
#: ciphertext, 53 MiB, 1.25 s of CPU to build at 2048 bits in C) buy a query a few
#: milliseconds; 8 bits take 128 products per ciphertext, 16 MiB and 0.37 s.
CACHED_WINDOW = 8
#: Memory a table's build leaves behind beyond its entries (the allocator's kept
#: scratch of the batch inversion, measured 1.5 MiB at 2048 bits), rounded up.
_BUILD_SLACK = 2 << 20
#: Bytes a pooled randomizer (one gmpy2 object) takes beyond its limbs, rounded up.
_POOLED_OVERHEAD = 192
#: Most requesters remembered as having shown a key once (a second use caches it).
_MAX_SEEN = 1024
#: Randomizers a cached key keeps ready (a 100-group answer of three sums takes 11 at
#: 2048 bits); 512 bytes each at 2048 bits, counted in :func:`table_bytes`.
POOL_SIZE = 32


def table_bytes(bits: int, window: int | None = None) -> int:
    """Estimated memory of the DJN table of a ``bits``-bit key (``window``: default width).

    Mirrors :class:`~datafed.hazmat.FixedBaseTable`: ``ceil(e / w)`` rows of ``2^w``
    entries of ``n^2``, ``e`` the short exponent's length.
    """
    exp = exponent_bits(bits, strict=False)
    entry = (2 * bits + 7) // 8
    w = window or window_bits(exp, entry)
    # Table entries beyond their limbs: none in the C loop's array, two gmpy2 objects and
    # two list slots each in Python (hazmat.entry_overhead_bytes); pooled randomizers are
    # gmpy2 objects either way.
    rows = -(-exp // w) * (1 << w) * (entry + entry_overhead_bytes())
    return rows + POOL_SIZE * (entry + _POOLED_OVERHEAD) + _BUILD_SLACK


class _OneOffKey(PaillierPublicKey):
    """A public key whose fixed-base table uses narrow windows (see module docs)."""

    def precompute(self) -> None:
        """Build the narrow table on first use."""
        if self._table is None:
            bits = exponent_bits(self.bits, strict=self.strict)
            self._table = FixedBaseTable(
                self.djn_base, self._n2, bits, window=ONE_OFF_WINDOW, root=self._n
            )


class _SharedKey(PaillierPublicKey):
    """A cached key: its wide table is built once, on a thread of its own.

    Until the wide table is ready, answers encrypt with a narrow table (as a one-off key
    does, built once for this key), so no answer waits the second or so a wide table
    takes to build; from then on every answer uses the wide one.

    Off the answer path the key also keeps up to :data:`POOL_SIZE` randomizers
    ``h_s^α`` (each with its own fresh ``α``, used by one encryption and then dropped),
    refilled on a thread after every answer: an encryption that finds one ready is one
    product modulo ``n²`` instead of 128. A randomizer is exactly what the encryption
    would have drawn at that moment, so nothing about the ciphertexts changes; an empty
    pool only means the answer computes its own, as before.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._build = threading.Lock()
        self._narrow: FixedBaseTable | None = None
        self._thread: threading.Thread | None = None
        self._pool: list[Any] = []
        self._pool_lock = threading.Lock()
        self._refilling = False

    def refill(self) -> None:
        """Fill the randomizer pool on a background thread, once the wide table exists."""
        with self._pool_lock:
            if self._refilling or self._table is None or len(self._pool) >= POOL_SIZE:
                return
            self._refilling = True
        threading.Thread(target=self._refill, daemon=True).start()

    def _refill(self) -> None:
        table = self._table
        assert table is not None
        try:
            while True:
                with self._pool_lock:
                    if len(self._pool) >= POOL_SIZE:
                        return
                mask = table.random_power()
                with self._pool_lock:
                    self._pool.append(mask)
        finally:
            with self._pool_lock:
                self._refilling = False

    @property
    def pooled(self) -> int:
        """Randomizers ready (tests and benchmarks)."""
        with self._pool_lock:
            return len(self._pool)

    def start_build(self) -> None:
        """Build the wide table on a background thread (once)."""
        with self._build:
            if self._thread is not None:
                return
            self.djn_base  # noqa: B018 - one base for both tables, drawn under the lock
            self._thread = threading.Thread(target=self._build_wide, daemon=True)
            self._thread.start()

    def _build_wide(self) -> None:
        bits = exponent_bits(self.bits, strict=self.strict)
        self._table = FixedBaseTable(
            self.djn_base, self._n2, bits, window=CACHED_WINDOW, root=self._n
        )
        self.refill()

    def precompute(self) -> None:
        """Wait for the wide table (built on its thread), e.g. before timing."""
        self.start_build()
        assert self._thread is not None
        self._thread.join()

    def _pooled(self) -> Any:
        """A pooled ``h_s^α`` (removed: each is used once), or ``None``."""
        with self._pool_lock:
            return self._pool.pop() if self._pool else None

    def _live_table(self) -> FixedBaseTable:
        """The wide table once built, else the narrow one (built on first need)."""
        table = self._table
        if table is None:
            with self._build:
                if self._narrow is None:
                    bits = exponent_bits(self.bits, strict=self.strict)
                    self._narrow = FixedBaseTable(
                        self.djn_base, self._n2, bits, window=ONE_OFF_WINDOW, root=self._n
                    )
                table = self._narrow
        return table

    def random_mask(self) -> Any:
        """A pooled ``h_s^α``, else one from the wide or narrow table."""
        mask = self._pooled()
        return self._live_table().random_power() if mask is None else mask

    def _encrypt_residue(self, m: Any) -> Any:
        mask = self._pooled()
        if mask is None:
            return self._live_table().random_power(m)
        return gmpy2.f_mod(mask * (1 + m * self._n), self._n2)


@dataclass
class _Entry:
    owner: str
    key: PaillierPublicKey
    size: int
    used_at: float
    users: int = 0


class PaillierKeyCache:
    """Public keys with their DJN tables, bounded per requester and in bytes (module docs).

    Parameters
    ----------
    max_bytes
        Most bytes of tables held in all (estimated with :func:`table_bytes`).
    per_requester
        Most keys held for one requester.
    idle_s
        Seconds after which an unused key may be dropped to make room.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        max_bytes: int = 512 << 20,
        per_requester: int = 1,
        idle_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self.configure(max_bytes=max_bytes, per_requester=per_requester, idle_s=idle_s)

    def configure(self, *, max_bytes: int, per_requester: int, idle_s: float) -> None:
        """Set the limits (a node does this once from ``[limits]``); ValueError if invalid."""
        if max_bytes < 0 or per_requester < 1 or idle_s <= 0:
            raise ValueError("max_bytes >= 0, per_requester >= 1 and idle_s > 0 are required")
        with self._lock:
            self.max_bytes, self.per_requester, self.idle_s = max_bytes, per_requester, idle_s

    @property
    def bytes(self) -> int:
        """Estimated bytes of the cached tables."""
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def keys_of(self, owner: str) -> list[int]:
        """The moduli cached for ``owner`` (least recently used first)."""
        with self._lock:
            mine = sorted((e.used_at, n) for (o, n), e in self._entries.items() if o == owner)
        return [n for _, n in mine]

    def clear(self) -> None:
        """Forget every key not in use."""
        with self._lock:
            for k in [k for k, e in self._entries.items() if e.users == 0]:
                del self._entries[k]
            self._seen.clear()

    @contextmanager
    def use(self, owner: str, n: int) -> Iterator[PaillierPublicKey]:
        """The key ``n`` of ``owner`` for the duration of one answer (see module docs)."""
        key, entry = self._acquire(owner, n)
        try:
            yield key
        finally:
            if entry is not None:
                with self._lock:
                    entry.users -= 1
                    entry.used_at = self.clock()
                if isinstance(key, _SharedKey):
                    key.refill()  # off the answer path: the next answer finds them ready

    def _acquire(self, owner: str, n: int) -> tuple[PaillierPublicKey, _Entry | None]:
        with self._lock:
            now = self.clock()
            entry = self._entries.get((owner, n))
            if entry is not None:
                entry.users += 1
                entry.used_at = now
                return entry.key, entry
            if self._seen.get(owner) != n:  # first use: no large table for a fresh key
                self._seen[owner] = n
                self._seen.move_to_end(owner)
                while len(self._seen) > _MAX_SEEN:
                    self._seen.popitem(last=False)
                return _OneOffKey(n), None
            size = table_bytes(n.bit_length(), CACHED_WINDOW)
            if not self._room(owner, size, now):
                return _OneOffKey(n), None
            key = _SharedKey(n)
            key.start_build()
            entry = _Entry(owner, key, size, now, 1)
            self._entries[(owner, n)] = entry
            return entry.key, entry

    def _room(self, owner: str, size: int, now: float) -> bool:
        """Make room for one more key of ``owner`` (lock held); False if there is none."""
        mine = sorted(
            (e.used_at, k) for k, e in self._entries.items() if e.owner == owner and e.users == 0
        )
        held = sum(1 for e in self._entries.values() if e.owner == owner)
        for _, k in mine:  # the requester's own idle keys, least recently used first
            if held < self.per_requester:
                break
            del self._entries[k]
            held -= 1
        if held >= self.per_requester:
            return False
        for k in [
            k for k, e in self._entries.items() if e.users == 0 and now - e.used_at > self.idle_s
        ]:
            del self._entries[k]
        return sum(e.size for e in self._entries.values()) + size <= self.max_bytes


#: The node's one cache (configured by the node from ``[limits]``).
KEY_CACHE = PaillierKeyCache()
