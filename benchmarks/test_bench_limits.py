"""Paillier keys at a node under the bounded cache (``docs/policy.md#limits``), same run.

Row ``paillier.fresh_key`` (seconds): one answer of 10 ciphertexts under a modulus the
node has not seen. Ours: the key cache's first use, a one-off key with a narrow table
(window 5). Baseline: what the node did before, a full DJN table for every new modulus
(about 60 MiB at 2048 bits, 70 at 3072). ``extra`` carries each table's estimated
bytes. Row ``paillier.cached_key``: the same answer under a key already cached (ours)
against a one-off key (baseline): what caching on second use buys.
"""

from __future__ import annotations

import itertools
import random

import pytest
from sizes import SMOKE, size

from datafed.hazmat import PaillierPublicKey
from datafed.modes._paillier_keys import ONE_OFF_WINDOW, PaillierKeyCache, table_bytes

BITS = [2048] if SMOKE else [2048, 3072]
CIPHERTEXTS = size(10, 2)
_SEED = itertools.count(1)


def _modulus(bits: int) -> int:
    return random.Random(next(_SEED)).getrandbits(bits) | (1 << (bits - 1)) | 1


def _answer(key: PaillierPublicKey) -> None:
    for m in range(CIPHERTEXTS):
        key.encrypt(m)


@pytest.mark.parametrize("bits", BITS)
def test_fresh_key_one_off(benchmark, bench_row, bits):  # type: ignore[no-untyped-def]
    bench_row(
        "paillier.fresh_key",
        role="ours",
        unit="s",
        params={"bits": bits, "ciphertexts": CIPHERTEXTS},
        baseline_name="full DJN table per new key",
        table_bytes=table_bytes(bits, ONE_OFF_WINDOW),
    )
    cache = PaillierKeyCache()

    def run() -> None:
        with cache.use("alice", _modulus(bits)) as key:
            _answer(key)

    benchmark.pedantic(run, rounds=3, iterations=1)


@pytest.mark.parametrize("bits", BITS)
def test_fresh_key_full_table(benchmark, bench_row, bits):  # type: ignore[no-untyped-def]
    bench_row(
        "paillier.fresh_key",
        role="baseline",
        unit="s",
        params={"bits": bits, "ciphertexts": CIPHERTEXTS},
        baseline_name="full DJN table per new key",
        table_bytes=table_bytes(bits),
    )
    benchmark.pedantic(lambda: _answer(PaillierPublicKey(_modulus(bits))), rounds=3, iterations=1)


@pytest.mark.parametrize("bits", BITS)
def test_cached_key(benchmark, bench_row, bits):  # type: ignore[no-untyped-def]
    bench_row(
        "paillier.cached_key",
        role="ours",
        unit="s",
        params={"bits": bits, "ciphertexts": CIPHERTEXTS},
        baseline_name="one-off key",
    )
    cache, n = PaillierKeyCache(), _modulus(bits)
    for _ in range(2):  # the second use caches it; build its table before timing
        with cache.use("alice", n) as key:
            key.precompute()

    def run() -> None:
        with cache.use("alice", n) as key:
            _answer(key)

    benchmark.pedantic(run, rounds=5, iterations=1)


@pytest.mark.parametrize("bits", BITS)
def test_cached_key_one_off(benchmark, bench_row, bits):  # type: ignore[no-untyped-def]
    bench_row(
        "paillier.cached_key",
        role="baseline",
        unit="s",
        params={"bits": bits, "ciphertexts": CIPHERTEXTS},
        baseline_name="one-off key",
    )
    cache = PaillierKeyCache(max_bytes=0)  # nothing is ever cached

    def run() -> None:
        with cache.use("alice", _modulus(bits)) as key:
            _answer(key)

    benchmark.pedantic(run, rounds=5, iterations=1)
