"""Differential-privacy noise for a node's released aggregates (exact discrete Laplace).

Each component of a query is a sum over rows (COUNT adds 1 per row, SUM adds the clamped
value, SUMSQ its square), so adding or removing one row changes it by at most its
*sensitivity*.  The query's epsilon is split evenly over its components (sequential
composition); groups are disjoint, so they compose in parallel.  Noise is drawn with the
exact sampler of Canonne, Kamath and Steinke (2020) in fixed-point units, never with
floating-point Laplace (Mironov 2012).  Every node adds its own noise, so a total over
*n* nodes carries *n* independent draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from datafed.hazmat import RandomSource, sample_discrete_laplace
from datafed.query.components import Component, components
from datafed.query.spec import QuerySpec
from nodes.config import DpPolicy
from nodes.errors import PermissionDenied

__all__ = ["add_noise", "check_dp", "sensitivity"]


def check_dp(spec: QuerySpec, dp: DpPolicy) -> None:
    """Refuse what differential privacy cannot release here (MIN/MAX, unbounded columns)."""
    for c in components(spec):
        if c.kind in ("min", "max"):
            raise PermissionDenied(
                f"{c.kind.upper()} cannot be released under differential privacy"
            )
        if c.kind in ("sum", "sumsq") and c.column not in dp.bounds:
            raise PermissionDenied(
                f"column {c.column!r} has no DP bounds in {spec.dataset!r}'s policy"
            )


def sensitivity(c: Component, dp: DpPolicy, bits: int) -> Fraction:
    """Largest change one row makes to ``c``, in fixed-point units."""
    if c.kind in ("count", "bin"):
        return Fraction(1)  # one row adds 1 to a count, and to exactly one bin
    lo, hi = dp.bounds[c.column]
    bound = max(abs(lo), abs(hi))
    value = bound * bound if c.kind == "sumsq" else bound
    return Fraction(value) * (1 << bits)


def add_noise(
    values: Sequence[int],
    comps: Sequence[Component],
    dp: DpPolicy,
    bits: int,
    rng: RandomSource | None = None,
) -> tuple[list[int], list[float]]:
    """Add discrete Laplace noise to a group-major vector; return it and each stddev.

    The standard deviations are per component in value units (not fixed point); ``rng``:
    the sampler's randomness (``secrets`` by default; seeded only in statistical tests).
    """
    eps_c = Fraction(repr(dp.epsilon_per_query)) / len(comps)
    scales = [sensitivity(c, dp, bits) / eps_c for c in comps]
    noisy = [v + sample_discrete_laplace(scales[i % len(comps)], rng) for i, v in enumerate(values)]
    stddevs = [
        math.sqrt(2) * float(s) / (1 << bits if c.scaled else 1)
        for c, s in zip(comps, scales, strict=True)
    ]
    return noisy, stddevs
