"""Batch Paillier encryption on several cores.

Where the C loop is built (:func:`datafed.hazmat.native_available`), a pool of
threads shares the key's one fixed-base table: the products run without the GIL.
Otherwise each worker is a process that builds its own table once (from ``n`` and
the public DJN base ``h_s``), worth it only for large batches: starting the pool
costs about a second and each process holds a table.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any

from datafed.hazmat._djn import native_available
from datafed.hazmat._paillier import PaillierCiphertext, PaillierPublicKey

_WORKER_KEY: PaillierPublicKey | None = None


def _init_worker(n: int, base: int, strict: bool) -> None:
    global _WORKER_KEY
    _WORKER_KEY = PaillierPublicKey(n, strict=strict, djn_base=base)
    _WORKER_KEY.precompute()


def _encrypt_chunk(values: list[int], key: PaillierPublicKey | None = None) -> list[Any]:
    key = key or _WORKER_KEY
    assert key is not None
    return [c.value for c in key.encrypt_many(values)]


class BatchEncryptor:
    """Encrypt large batches under one public key on several cores (module docs).

    Parameters
    ----------
    public_key : PaillierPublicKey
        The key to encrypt under.
    workers : int, optional
        Number of worker threads or processes (default 2, one per core here).
    chunk : int, optional
        Plaintexts per task (default 256).

    Examples
    --------
    >>> with BatchEncryptor(pk, workers=2) as enc:  # doctest: +SKIP
    ...     cts = enc.encrypt_many(range(10_000))
    """

    def __init__(
        self, public_key: PaillierPublicKey, *, workers: int = 2, chunk: int = 256
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.public_key = public_key
        self.chunk = chunk
        self._pool: Executor
        self._task: Callable[[list[int]], list[Any]]
        if native_available():
            public_key.precompute()  # once, before the threads share it
            self._pool = ThreadPoolExecutor(max_workers=workers)
            self._task = partial(_encrypt_chunk, key=public_key)
            return
        # spawn, not fork: the parent may run gRPC threads, which fork would copy mid-state.
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(public_key.n, public_key.djn_base, public_key.strict),
        )
        self._task = _encrypt_chunk

    def encrypt_many(self, values: Sequence[int]) -> list[PaillierCiphertext]:
        """Encrypt ``values`` across the pool, preserving order.

        Parameters
        ----------
        values : sequence of int
            The plaintexts.

        Returns
        -------
        list of PaillierCiphertext
            One ciphertext per value.
        """
        pk = self.public_key
        for m in values:
            pk._plain(m)  # validate here so errors name the caller's value, not a worker's
        chunks = [list(values[i : i + self.chunk]) for i in range(0, len(values), self.chunk)]
        out: list[PaillierCiphertext] = []
        for raw in self._pool.map(self._task, chunks):
            out.extend(PaillierCiphertext(pk, c) for c in raw)
        return out

    def close(self) -> None:
        """Shut the worker processes down."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BatchEncryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
