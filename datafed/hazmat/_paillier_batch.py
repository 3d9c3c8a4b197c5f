"""Batch Paillier encryption on several cores (a process pool).

Each worker process builds its own fixed-base table once (from ``n`` and the
public DJN base ``h_s``) and then encrypts chunks of plaintexts.  Worth it only
for large batches: starting the pool costs about a second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from datafed.hazmat._paillier import PaillierCiphertext, PaillierPublicKey

_WORKER_KEY: PaillierPublicKey | None = None


def _init_worker(n: int, base: int, strict: bool) -> None:
    global _WORKER_KEY
    _WORKER_KEY = PaillierPublicKey(n, strict=strict, djn_base=base)
    _WORKER_KEY.precompute()


def _encrypt_chunk(values: list[int]) -> list[Any]:
    assert _WORKER_KEY is not None
    return [c.value for c in _WORKER_KEY.encrypt_many(values)]


class BatchEncryptor:
    """Encrypt large batches under one public key with a pool of processes.

    Parameters
    ----------
    public_key : PaillierPublicKey
        The key to encrypt under.
    workers : int, optional
        Number of worker processes (default 2, one per core here).
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
        # spawn, not fork: the parent may run gRPC threads, which fork would copy mid-state.
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(public_key.n, public_key.djn_base, public_key.strict),
        )

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
        for raw in self._pool.map(_encrypt_chunk, chunks):
            out.extend(PaillierCiphertext(pk, c) for c in raw)
        return out

    def close(self) -> None:
        """Shut the worker processes down."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BatchEncryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
