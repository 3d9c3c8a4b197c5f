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

__all__ = [
    "MAX_DP_BOUND",
    "NOISE_LIMIT",
    "add_noise",
    "check_dp",
    "check_dp_range",
    "noise_fits",
    "sensitivity",
]

#: Largest magnitude of a DP bound (``check-config``): beyond it a bound is a typo.
MAX_DP_BOUND = float(1 << 40)
#: A noise scale (fixed-point units) times this must stay under :data:`NOISE_LIMIT`, so a
#: draw overflows the node's signed 64-bit values with probability below ``e**-64``.
NOISE_MARGIN = 64
#: The node's values are signed 64-bit (``nodes.release.query.INT64``); keep 2 bits spare.
NOISE_LIMIT = 1 << 61


def noise_fits(sens: Fraction, epsilon: Fraction) -> bool:
    """Whether noise of sensitivity ``sens`` (fixed point) at ``epsilon`` fits 64 bits."""
    return sens / epsilon * NOISE_MARGIN < NOISE_LIMIT


def check_dp_range(spec: QuerySpec, dp: DpPolicy, bits: int) -> None:
    """Refuse, before admission, a DP query whose noise would overflow the node's values.

    The bounds (node configuration) and the analyst's ``fixed_point_bits`` set each
    component's noise scale; beyond 64-bit values the answer would be saturated noise,
    so the query is refused before any epsilon is spent.
    """
    comps = components(spec)
    eps_c = Fraction(repr(dp.epsilon_per_query)) / len(comps)
    for c in comps:
        if c.kind in ("count", "bin") or c.column not in dp.bounds:
            continue
        if not noise_fits(sensitivity(c, dp, bits), eps_c):
            lo, hi = dp.bounds[c.column]
            raise PermissionDenied(
                f"dataset {spec.dataset!r}: the DP noise of {c.kind.upper()}({c.column}) "
                f"with bounds [{lo:g}, {hi:g}] at fixed_point_bits {bits} would overflow "
                "64-bit values (refused before admission: no epsilon spent); ask with fewer "
                "fixed-point bits or fewer aggregates, or the operator narrows dp.bounds"
            )


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
