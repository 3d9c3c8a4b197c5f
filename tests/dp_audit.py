"""A statistical audit of a differentially private release: ``P[S|D] <= e^eps P[S|D'] + delta``.

The node-side release function (the real code path, in process) runs ``trials`` times on
each of two neighbouring datasets ``D`` and ``D'`` (differing in one person). For a family
of events ``S`` -- every statistic the test names, at or above and at or below each of a
set of thresholds (quantiles of the pooled outputs) -- the probability under each dataset
is bounded with exact Clopper-Pearson intervals, and an event is a **violation** when the
lower bound under one dataset exceeds ``e^eps`` times the upper bound under the other
plus ``delta`` (both orders). The bounds are Bonferroni-corrected over every check, so a
mechanism that is ``(eps, delta)``-DP is flagged with probability at most ``alpha``; the
randomness is seeded, so a test is repeatable. A mechanism with too little noise is
flagged once the trials resolve its extra privacy loss: each channel's test has a negative
twin that proves it (tests/unit/nodes/test_dp_audit.py).

Good statistics matter: for a mechanism of several noisy components, name each component
*and* a sum of them normalised by their sensitivities (joint events: a mechanism whose
components are each within the budget but not together fails only there); for Gaussian
noise on a vector, the projection on the difference of the two datasets' true values.

Usage (the same for every channel, queries included)::

    result = audit(lambda data, rng: release(data, rng=rng.source), d, d_prime,
                   {"count": lambda out: out.count}, epsilon=0.5, delta=0.0)
    result.assert_private()
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Audit", "Seeded", "Violation", "audit", "clopper_pearson", "corner", "norm_sum"]

QUANTILES = tuple(q / 20 for q in range(1, 20))


class Seeded:
    """Seeded randomness for one run: ``randbelow`` (the exact samplers' RandomSource of
    :mod:`datafed.hazmat`) and ``numpy`` (a NumPy generator, for Gaussian noise)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.numpy = np.random.default_rng(seed)

    def randbelow(self, n: int, /) -> int:
        """A uniform integer in ``[0, n)``."""
        return self._random.randrange(n)

    @property
    def source(self) -> Seeded:
        """Itself, as a RandomSource."""
        return self


@dataclass(frozen=True)
class Violation:
    """An event more likely under one dataset than DP allows, beyond sampling error."""

    event: str
    p_lower: float  # lower bound of P[S | the dataset it is more likely under]
    q_upper: float  # upper bound of P[S | the other]
    epsilon_lower: float  # ln((p_lower - delta) / q_upper): the mechanism's epsilon is above it


@dataclass
class Audit:
    """What :func:`audit` found."""

    epsilon: float
    delta: float
    trials: int
    checks: int
    violations: list[Violation] = field(default_factory=list)
    #: The largest privacy loss any event showed in its point estimates (not a bound).
    epsilon_estimate: float = 0.0

    def assert_private(self) -> None:
        """Fail with the worst violations if there is any."""
        worst = sorted(self.violations, key=lambda v: -v.epsilon_lower)[:5]
        assert not worst, (
            f"not ({self.epsilon}, {self.delta})-DP: {len(self.violations)} of "
            f"{self.checks} checks violate, worst {worst}"
        )


def audit(
    mechanism: Callable[[Any, Seeded], Any],
    d: Any,
    d_prime: Any,
    statistics: Mapping[str, Callable[[Any], float]],
    *,
    epsilon: float,
    delta: float,
    trials: int = 6000,
    seed: int = 2024,
    alpha: float = 1e-5,
) -> Audit:
    """Run ``mechanism(data, rng)`` ``trials`` times on ``d`` and ``d_prime``; check events.

    Parameters
    ----------
    mechanism
        The release under test; ``rng`` is a :class:`Seeded` (pass ``rng.source`` to the
        exact samplers, ``rng.numpy`` to NumPy).
    d, d_prime
        Two neighbouring datasets (whatever the mechanism takes).
    statistics
        Named real-valued functions of one output; each gives threshold events.
    epsilon, delta
        The guarantee claimed for one output.
    trials, seed, alpha
        Runs per dataset, the seed, and the chance that a DP mechanism is flagged.
    """
    rng = Seeded(seed)
    outs = [[mechanism(data, rng) for _ in range(trials)] for data in (d, d_prime)]
    table = {
        name: (np.array([stat(o) for o in outs[0]]), np.array([stat(o) for o in outs[1]]))
        for name, stat in statistics.items()
    }
    events = list(_events(table))
    result = Audit(epsilon, delta, trials, checks=2 * len(events))
    level = alpha / (2 * result.checks)  # Bonferroni: two one-sided bounds per check
    bound = math.exp(epsilon)
    for name, k0, k1 in events:
        for label, k, j in ((f"{name} | D", k0, k1), (f"{name} | D'", k1, k0)):
            p, q = k / trials, j / trials
            if p > delta:
                loss = math.log((p - delta) / q) if q > 0 else math.inf
                result.epsilon_estimate = max(result.epsilon_estimate, loss)
            if p <= bound * q + delta:
                continue  # not even the point estimates violate
            p_low = clopper_pearson(k, trials, level)[0]
            q_high = clopper_pearson(j, trials, level)[1]
            if p_low > bound * q_high + delta:
                eps_low = math.log((p_low - delta) / q_high) if q_high > 0 else math.inf
                result.violations.append(Violation(label, p_low, q_high, eps_low))
    return result


def _events(
    table: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, int, int]]:
    """``(event, count under D, count under D')`` for every statistic and threshold."""
    out = []
    for name, (a, b) in table.items():
        pooled = np.concatenate([a, b])
        for t in sorted(set(np.quantile(pooled, QUANTILES).tolist())):
            out.append((f"{name} >= {t:g}", int(np.sum(a >= t)), int(np.sum(b >= t))))
            out.append((f"{name} <= {t:g}", int(np.sum(a <= t)), int(np.sum(b <= t))))
    return out


def clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    """Exact one-sided bounds ``(lower, upper)`` of a binomial proportion, each at ``level``.

    ``lower`` is the ``level`` quantile of Beta(k, n - k + 1) (0 for k = 0), ``upper`` the
    ``1 - level`` quantile of Beta(k + 1, n - k) (1 for k = n).
    """
    lower = 0.0 if k == 0 else _beta_quantile(level, k, n - k + 1)
    upper = 1.0 if k == n else _beta_quantile(1 - level, k + 1, n - k)
    return lower, upper


def _beta_quantile(prob: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _betainc(a, b, mid) < prob:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes, 3rd ed., §6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front += a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(front) * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def norm_sum(
    parts: Callable[[Any], Sequence[float]], scale: Sequence[float]
) -> Callable[[Any], float]:
    """A statistic: the sum of an output's components, each over its sensitivity."""
    return lambda out: float(sum(x / s for x, s in zip(parts(out), scale, strict=True)))


def corner(
    parts: Callable[[Any], Sequence[float]], base: Sequence[float], scale: Sequence[float]
) -> Callable[[Any], float]:
    """A statistic whose events ``>= t`` are orthants: every component at least ``base + t*scale``.

    For independent noise per component, the orthant at the second dataset's true values
    is where the likelihood ratio of the two datasets is largest: the sharpest joint event.
    """
    return lambda out: float(
        min((x - b) / s for x, b, s in zip(parts(out), base, scale, strict=True))
    )
