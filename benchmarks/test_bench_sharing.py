"""Additive sharing into 3 shares: AES-CTR seed expansion vs shares drawn from ``secrets``."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from sizes import size

from datafed.hazmat import reconstruct_additive, split_additive

COUNT = size(2_000_000, 1_000)
PARAMS = {"values": COUNT, "shares": 3}


@pytest.fixture(scope="module")
def ring():  # type: ignore[no-untyped-def]
    return np.random.default_rng(9).integers(0, 2**64, COUNT, dtype=np.uint64)


def _secrets_split(x: np.ndarray) -> list[np.ndarray]:
    shares = [np.frombuffer(secrets.token_bytes(8 * x.shape[0]), dtype=np.uint64) for _ in range(2)]
    return [*shares, x - shares[0] - shares[1]]


def test_split_secrets_baseline(benchmark, bench_row, ring):  # type: ignore[no-untyped-def]
    bench_row(
        "sharing.split",
        role="baseline",
        unit="values/s",
        per_call=COUNT,
        params=PARAMS,
        baseline_name="secrets.token_bytes shares (numpy)",
    )
    out = benchmark.pedantic(_secrets_split, args=(ring,), rounds=5, iterations=1)
    assert np.array_equal(out[0] + out[1] + out[2], ring)


def test_split_ours(benchmark, bench_row, ring):  # type: ignore[no-untyped-def]
    bench_row(
        "sharing.split",
        role="ours",
        unit="values/s",
        per_call=COUNT,
        params=PARAMS,
        baseline_name="secrets.token_bytes shares (numpy)",
    )
    out = benchmark.pedantic(split_additive, args=(ring, 3), rounds=5, iterations=1)
    assert np.array_equal(reconstruct_additive(out), ring)
