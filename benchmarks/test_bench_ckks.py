"""CKKS: our chunking wrapper vs raw TenSEAL on the same context, same run (target ≤ 10% overhead)."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from sizes import size

from datafed.hazmat import HeContext, HePublicContext

LENGTH = size(51_200, 4_096)  # a model layer that spans 13 ciphertexts of 4,096 slots
PARAMS = {"N": 8192, "values": LENGTH}


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    ctx = HeContext.generate()
    public = HePublicContext.from_bytes(ctx.public_bytes())
    x = np.random.default_rng(3).uniform(-1, 1, LENGTH)
    return ctx, public, x


def test_ckks_encrypt_raw_tenseal(benchmark, bench_row, setup):  # type: ignore[no-untyped-def]
    _, public, x = setup
    bench_row(
        "ckks.encrypt",
        role="baseline",
        unit="values/s",
        per_call=LENGTH,
        params=PARAMS,
        baseline_name="tenseal.ckks_vector per 4096-slot chunk",
    )
    raw_ctx, step = public._context, public.params.slots

    def raw() -> list[object]:
        return [ts.ckks_vector(raw_ctx, x[i : i + step].tolist()) for i in range(0, LENGTH, step)]

    benchmark.pedantic(raw, rounds=5, iterations=1)


def test_ckks_encrypt_ours(benchmark, bench_row, setup):  # type: ignore[no-untyped-def]
    ctx, public, x = setup
    bench_row(
        "ckks.encrypt",
        role="ours",
        unit="values/s",
        per_call=LENGTH,
        params=PARAMS,
        baseline_name="tenseal.ckks_vector per 4096-slot chunk",
    )
    vec = benchmark.pedantic(public.encrypt, args=(x,), rounds=5, iterations=1)
    result = ctx.decrypt(vec)
    assert np.abs(result.values - x).max() <= result.error_bound
