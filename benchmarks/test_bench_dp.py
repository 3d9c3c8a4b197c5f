"""Exact discrete noise samplers vs numpy's floating-point Laplace (fast, but leaks: Mironov 2012)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from sizes import size

from datafed.hazmat import sample_discrete_gaussian, sample_discrete_laplace

COUNT = size(5_000, 100)


def test_dp_sample_numpy_baseline(benchmark, bench_row):  # type: ignore[no-untyped-def]
    bench_row(
        "dp.sample",
        role="baseline",
        unit="ops/s",
        per_call=COUNT,
        pair="dp",
        params={"scale": 10},
        baseline_name="numpy.random.laplace (float, not exact)",
    )
    rng = np.random.default_rng()
    benchmark.pedantic(lambda: np.rint(rng.laplace(0, 10, COUNT)), rounds=5, iterations=1)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_dp_sample_ours(benchmark, bench_row, kind):  # type: ignore[no-untyped-def]
    params = {"mechanism": f"discrete_{kind}", "scale" if kind == "laplace" else "sigma2": 10}
    bench_row(
        "dp.sample",
        role="ours",
        unit="ops/s",
        per_call=COUNT,
        pair="dp",
        params=params,
        baseline_name="numpy.random.laplace (float, not exact)",
    )
    if kind == "laplace":
        fn = lambda: [sample_discrete_laplace(10) for _ in range(COUNT)]  # noqa: E731
    else:
        fn = lambda: [sample_discrete_gaussian(Fraction(10)) for _ in range(COUNT)]  # noqa: E731
    out = benchmark.pedantic(fn, rounds=3, iterations=1)
    assert len(out) == COUNT
