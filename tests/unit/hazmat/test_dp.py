from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import pytest

from datafed.hazmat import (
    bernoulli_exp,
    gaussian_sigma2,
    laplace_scale,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)
from tests.unit.hazmat.conftest import SeededSource

N = 20_000
SIGNIFICANCE = 1e-4


def _chi_square_p(samples: list[int], pmf: dict[int, float]) -> float:
    """Pearson chi-square p-value; values with expected count < 5 pool into two tail bins."""
    n = len(samples)
    counts = Counter(samples)
    keep = sorted(k for k, p in pmf.items() if p * n >= 5)
    lo, hi = keep[0], keep[-1]
    observed = [counts.get(k, 0) for k in keep]
    expected = [pmf[k] * n for k in keep]
    for side in (lambda k: k < lo, lambda k: k > hi):
        observed.append(sum(c for k, c in counts.items() if side(k)))
        expected.append(sum(p for k, p in pmf.items() if side(k)) * n)
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    dof = sum(1 for e in expected if e > 0) - 1
    return _gamma_q(dof / 2, stat / 2)


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x): series below a + 1, Lentz's continued
    fraction above (Numerical Recipes, 3rd ed., §6.2)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-15:
            k += 1
            term *= x / k
            total += term
        return 1.0 - total * math.exp(log_front)
    b, c, d = x + 1 - a, 1e300, 1 / (x + 1 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = 1 / (an * d + b if abs(an * d + b) > 1e-300 else 1e-300)
        c = b + an / c if abs(b + an / c) > 1e-300 else 1e-300
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(log_front) * h


@pytest.mark.parametrize(
    ("a", "x", "q"),
    # chi-square survival values: dof 2 -> exp(-x/2); dof 1 at 3.841 -> 0.05; dof 10 at 18.307 -> 0.05
    [(1.0, 1.5, math.exp(-1.5)), (0.5, 3.841459 / 2, 0.05), (5.0, 18.307038 / 2, 0.05)],
)
def test_gamma_q_reference_values(a: float, x: float, q: float) -> None:
    assert _gamma_q(a, x) == pytest.approx(q, rel=1e-5)


def _laplace_pmf(b: Fraction, support: int) -> dict[int, float]:
    q = math.exp(-1 / float(b))
    z = (1 - q) / (1 + q)
    return {y: z * q ** abs(y) for y in range(-support, support + 1)}


def _gauss_pmf(sigma2: Fraction, support: int) -> dict[int, float]:
    w = {y: math.exp(-(y * y) / (2 * float(sigma2))) for y in range(-support, support + 1)}
    total = sum(w.values())
    return {y: v / total for y, v in w.items()}


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(3), Fraction(25, 7)])
def test_discrete_laplace_matches_pmf(scale: Fraction) -> None:
    rng = SeededSource(11)
    samples = [sample_discrete_laplace(scale, rng) for _ in range(N)]
    assert _chi_square_p(samples, _laplace_pmf(scale, 200)) > SIGNIFICANCE


@pytest.mark.parametrize("sigma2", [Fraction(1, 3), Fraction(4), Fraction(50, 3)])
def test_discrete_gaussian_matches_pmf(sigma2: Fraction) -> None:
    rng = SeededSource(12)
    samples = [sample_discrete_gaussian(sigma2, rng) for _ in range(N)]
    assert _chi_square_p(samples, _gauss_pmf(sigma2, 200)) > SIGNIFICANCE


def test_chi_square_detects_a_wrong_distribution() -> None:
    rng = SeededSource(13)
    samples = [sample_discrete_laplace(Fraction(3), rng) for _ in range(N)]
    assert _chi_square_p(samples, _laplace_pmf(Fraction(4), 200)) < SIGNIFICANCE


def test_bernoulli_exp_frequency() -> None:
    rng = SeededSource(14)
    for gamma in (Fraction(1, 3), Fraction(5, 2)):
        hits = sum(bernoulli_exp(gamma, rng) for _ in range(N))
        p = math.exp(-float(gamma))
        assert abs(hits / N - p) < 5 * math.sqrt(p * (1 - p) / N)


def test_exact_arguments_only() -> None:
    with pytest.raises(TypeError, match="int or Fraction"):
        sample_discrete_laplace(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        sample_discrete_gaussian(Fraction(0))
    with pytest.raises(ValueError, match="non-negative"):
        bernoulli_exp(Fraction(-1), SeededSource(1))


def test_calibration() -> None:
    assert laplace_scale(Fraction(1, 2), 3) == 6
    assert gaussian_sigma2(Fraction(1, 8), 1) == 4
    assert isinstance(sample_discrete_laplace(1), int)  # default CSPRNG source
