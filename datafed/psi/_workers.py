"""The bulk arithmetic of intersection-sum, in chunks, optionally on a process pool.

A node's share of the work is one hash-to-group and one or two scalar multiplications per
identifier and one Paillier encryption per value: independent per element, so it splits
into chunks that a pool of processes runs on every core.  Small sets run inline (starting
a pool costs about a second).  Points travel as concatenated 32-byte encodings.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from datafed.hazmat import (
    HazmatError,
    PaillierPublicKey,
    hash_to_group,
    scalar_mult,
)
from datafed.psi.errors import InvalidPsiMessage

__all__ = ["POINT_BYTES", "Pool", "blind_items", "encrypt_values", "multiply_points"]

#: Compressed edwards25519 point length (RFC 8032 §5.1.2).
POINT_BYTES = 32
#: Below this many elements a job runs inline.
PARALLEL_THRESHOLD = 8192
_CHUNK = 2048
T = TypeVar("T")
R = TypeVar("R")
_KEYS: dict[tuple[int, int], PaillierPublicKey] = {}


def _blind_chunk(key: bytes, items: list[bytes]) -> bytes:
    return b"".join(scalar_mult(key, hash_to_group(i)) for i in items)


def _multiply_chunk(key: bytes, points: bytes) -> bytes | None:
    try:
        return b"".join(
            scalar_mult(key, points[i : i + POINT_BYTES])
            for i in range(0, len(points), POINT_BYTES)
        )
    except HazmatError:
        return None  # the caller raises the detail-free error


def _encrypt_chunk(n: int, base: int, values: list[int]) -> list[bytes]:
    pk = _KEYS.get((n, base))
    if pk is None:
        _KEYS.clear()
        pk = _KEYS[(n, base)] = PaillierPublicKey(n, djn_base=base)
    return [c.to_bytes() for c in pk.encrypt_many(values)]


class Pool:
    """A lazily started process pool for the bulk steps of large jobs.

    Parameters
    ----------
    workers
        Worker processes (default: one per core).
    threshold
        Jobs smaller than this many elements run inline.
    chunk
        Elements per task (a quarter of it for Paillier encryptions, which cost more).
    """

    def __init__(
        self, workers: int | None = None, threshold: int = PARALLEL_THRESHOLD, chunk: int = _CHUNK
    ) -> None:
        n = workers if workers is not None else os.cpu_count() or 1
        if n < 1:
            raise ValueError(f"workers must be at least 1, got {n}")
        if chunk < 4:
            raise ValueError(f"chunk must be at least 4, got {chunk}")
        self.workers, self.threshold, self.chunk = n, threshold, chunk
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[..., R], head: tuple[Any, ...], chunks: Sequence[Any]) -> list[R]:
        """Run ``fn(*head, chunk)`` for every chunk, in order.

        Parameters
        ----------
        fn
            A module-level function (it is pickled to the workers).
        head
            Leading arguments shared by every call.
        chunks
            One trailing argument per call.

        Returns
        -------
        list
            The results, in chunk order.
        """
        if self.workers == 1 or len(chunks) <= 1:
            return [fn(*head, c) for c in chunks]
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the node runs gRPC threads, which fork would copy mid-state.
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
            pool = self._pool
        futures = [pool.submit(fn, *head, c) for c in chunks]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the worker processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _chunked(self, items: Sequence[T], size: int) -> list[Sequence[T]]:
        if len(items) < self.threshold:
            return [items] if items else []
        return [items[i : i + size] for i in range(0, len(items), size)]


def blind_items(pool: Pool, key: bytes, items: Sequence[bytes]) -> bytes:
    """Return ``H(item)^key`` for every item, concatenated, in order (32 bytes each).

    ``key`` is a 32-byte scalar; ``items`` are canonical identifier encodings.
    """
    return b"".join(
        pool.map(_blind_chunk, (key,), [list(c) for c in pool._chunked(items, pool.chunk)])
    )


def multiply_points(pool: Pool, key: bytes, points: bytes) -> bytes:
    """Return ``P^key`` for every 32-byte point ``P`` of ``points``, in order.

    Parameters
    ----------
    pool
        Where to run.
    key
        A 32-byte scalar.
    points
        Concatenated points from a peer.

    Returns
    -------
    bytes
        The products, concatenated.

    Raises
    ------
    InvalidPsiMessage
        If any point is not a canonical element of the prime-order group.
    """
    if len(points) % POINT_BYTES:
        raise ValueError(f"points payload must be a multiple of {POINT_BYTES} bytes")
    count = len(points) // POINT_BYTES
    step = pool.chunk * POINT_BYTES
    spans = (
        [points]
        if count < pool.threshold
        else [points[i : i + step] for i in range(0, len(points), step)]
    )
    parts = pool.map(_multiply_chunk, (key,), [s for s in spans if s])
    if any(p is None for p in parts):
        raise InvalidPsiMessage
    return b"".join(p for p in parts if p is not None)


def encrypt_values(pool: Pool, public_key: PaillierPublicKey, values: Sequence[int]) -> list[bytes]:
    """Encrypt ``values`` under ``public_key``; return the fixed-length encodings, in order.

    Parameters
    ----------
    pool
        Where to run.
    public_key
        The analyst's key.
    values
        Plaintexts (already range-checked).

    Returns
    -------
    list of bytes
        One ciphertext per value.
    """
    chunks = pool._chunked(values, pool.chunk // 4)
    if len(chunks) <= 1 or pool.workers == 1:
        return [c.to_bytes() for c in public_key.encrypt_many(values)]
    head = (public_key.n, public_key.djn_base)
    return [ct for part in pool.map(_encrypt_chunk, head, [list(c) for c in chunks]) for ct in part]
