"""Exact samplers for the discrete Laplace and discrete Gaussian distributions.

Algorithms 1–3 of Canonne, Kamath and Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020): every step is integer or rational
arithmetic over uniform integers, with no floating point, so the output
distribution is exactly the intended one (floating-point Laplace noise leaks the
input through the low bits, Mironov, CCS 2012).

* discrete Laplace with scale ``b``: ``P[Y = y] ∝ exp(−|y| / b)``;
* discrete Gaussian with variance parameter ``σ²``: ``P[Y = y] ∝ exp(−y² / (2σ²))``.

Randomness comes from a :class:`RandomSource` (``randbelow(n)``); the default is
:mod:`secrets`.  Tests inject a seeded source.
"""

from __future__ import annotations

import secrets
from fractions import Fraction
from math import isqrt
from typing import Protocol

Rational = int | Fraction
"""Exact parameters: ints or fractions (convert a float ``x`` with ``Fraction(str(x))``)."""


class RandomSource(Protocol):
    """Uniform integers: ``randbelow(n)`` is uniform on ``{0, …, n − 1}``."""

    def randbelow(self, n: int, /) -> int:
        """Return a uniform integer in ``[0, n)``."""


class SystemRandomSource:
    """The default source: :func:`secrets.randbelow` (the OS CSPRNG)."""

    def randbelow(self, n: int, /) -> int:
        """Return a uniform integer in ``[0, n)`` from the OS CSPRNG."""
        return secrets.randbelow(n)


def _as_fraction(value: Rational, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        raise TypeError(f"{name} must be an int or Fraction, got {type(value).__name__}")
    return Fraction(value)


def _positive(value: Rational, name: str) -> Fraction:
    f = _as_fraction(value, name)
    if f <= 0:
        raise ValueError(f"{name} must be positive, got {f}")
    return f


def _bernoulli(p: Fraction, rng: RandomSource) -> bool:
    """Return True with probability ``p`` in ``[0, 1]``."""
    return rng.randbelow(p.denominator) < p.numerator


def bernoulli_exp(gamma: Fraction, rng: RandomSource) -> bool:
    """Return True with probability ``exp(−gamma)`` exactly (CKS20 Algorithm 1).

    Parameters
    ----------
    gamma : Fraction
        A non-negative rational.
    rng : RandomSource
        Source of uniform integers.

    Returns
    -------
    bool
        A Bernoulli(``exp(−gamma)``) sample.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}")
    while gamma > 1:  # exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋))
        if not bernoulli_exp(Fraction(1), rng):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def _geometric_exp_minus_one(rng: RandomSource) -> int:
    """Number of successes before the first failure of Bernoulli(exp(−1))."""
    v = 0
    while bernoulli_exp(Fraction(1), rng):
        v += 1
    return v


def sample_discrete_laplace(scale: Rational, rng: RandomSource | None = None) -> int:
    """Draw ``Y`` with ``P[Y = y] ∝ exp(−|y| / scale)`` (CKS20 Algorithm 2).

    Parameters
    ----------
    scale : int or Fraction
        The scale ``b = t / s > 0``.
    rng : RandomSource, optional
        Source of uniform integers; :mod:`secrets` by default.

    Returns
    -------
    int
        A discrete Laplace sample, symmetric about 0.
    """
    b = _positive(scale, "scale")
    source = rng if rng is not None else SystemRandomSource()
    t, s = b.numerator, b.denominator
    while True:
        u = source.randbelow(t)
        if not bernoulli_exp(Fraction(u, t), source):
            continue
        x = u + t * _geometric_exp_minus_one(source)
        y = x // s
        negative = source.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def sample_discrete_gaussian(sigma2: Rational, rng: RandomSource | None = None) -> int:
    """Draw ``Y`` with ``P[Y = y] ∝ exp(−y² / (2·sigma2))`` (CKS20 Algorithm 3).

    Parameters
    ----------
    sigma2 : int or Fraction
        The variance parameter ``σ² > 0``.
    rng : RandomSource, optional
        Source of uniform integers; :mod:`secrets` by default.

    Returns
    -------
    int
        A discrete Gaussian sample, mean 0.
    """
    var = _positive(sigma2, "sigma2")
    source = rng if rng is not None else SystemRandomSource()
    t = isqrt(var.numerator // var.denominator) + 1  # ⌊σ⌋ + 1
    while True:
        y = sample_discrete_laplace(t, source)
        gamma = (abs(y) - var / t) ** 2 / (2 * var)
        if bernoulli_exp(gamma, source):
            return y


def laplace_scale(epsilon: Rational, sensitivity: Rational = 1) -> Fraction:
    """Return the discrete Laplace scale ``Δ/ε`` giving ``ε``-DP for ``L1``-sensitivity ``Δ``.

    Parameters
    ----------
    epsilon : int or Fraction
        Privacy parameter, positive.
    sensitivity : int or Fraction, optional
        Integer-valued query's ``L1`` sensitivity (default 1).

    Returns
    -------
    Fraction
        The scale.
    """
    eps, delta = _as_fraction(epsilon, "epsilon"), _as_fraction(sensitivity, "sensitivity")
    if eps <= 0 or delta <= 0:
        raise ValueError("epsilon and sensitivity must be positive")
    return delta / eps


def gaussian_sigma2(rho: Rational, sensitivity: Rational = 1) -> Fraction:
    """Return ``σ² = Δ² / (2ρ)``: the discrete Gaussian is then ``ρ``-zCDP (CKS20 Thm 4).

    Parameters
    ----------
    rho : int or Fraction
        zCDP parameter, positive.
    sensitivity : int or Fraction, optional
        Integer-valued query's ``L2`` sensitivity (default 1).

    Returns
    -------
    Fraction
        The variance parameter.
    """
    r, delta = _as_fraction(rho, "rho"), _as_fraction(sensitivity, "sensitivity")
    if r <= 0 or delta <= 0:
        raise ValueError("rho and sensitivity must be positive")
    return delta * delta / (2 * r)
