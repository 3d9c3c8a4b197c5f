"""Differential privacy for intersection-sum: who adds which noise, and how much.

A node whose dataset policy has a DP section protects its rows as follows.

* The **values node** clamps each identifier's value (its rows summed) to its DP bounds for
  the value column, so one identifier changes the sum by at most ``B = max(|lo|, |hi|)`` (in fixed
  point, ``B·2^bits``), and states ``B·2^bits`` and its epsilon in its signed exchange
  statement.  It cannot add the noise itself: it never sees the sum.
* The **ids node** finishes the sum, so it adds the noise (noise where the data is
  aggregated): exact discrete Laplace (Canonne, Kamath and Steinke 2020) on the sum,
  added *under encryption* as ``Enc_A(sum) · Enc_A(noise)`` with fresh randomness, which also
  re-randomizes the result, and on the intersection size, in the clear.  Adding or removing
  one identifier on *either* side changes the size by at most 1 and the sum by at most
  ``B·2^bits``, so one draw protects both nodes' rows.
* The release is calibrated to ``eps = min`` of the DP nodes' epsilons, split evenly
  between the sum and the size (sequential composition): it is ``eps``-DP for each DP node,
  and each DP node charges its **own** epsilon per operation to the budget of
  (requester, dataset), recorded on its ``approved`` entry (delta 0).  If only the ids
  node has DP, the values are unbounded and no noise can hide one identifier's value:
  refused.
* Under DP nothing is refused on the rows: neither node applies its minimum group size to
  the intersection (a refusal on the exact size would tell whether one identifier is in
  it); the noise protects a small intersection.  The node-side calls are in
  :mod:`nodes.release.psi`.

What DP covers: the analyst's view of the released size and sum, and anything derived
from them.  What it does not cover: the ids node sees the exact intersection size and the
values node's pair count ``|W|``; the values node sees ``|V|``; the analyst sees ``|V|`` and
``|W|`` (set cardinalities, stated in the signed statements); and a values node charges
its budget when it seals its pairs, even if the ids node later refuses (spending is
conservative).  The noise is
trusted to an honest ids node (the semi-honest model of :mod:`datafed.psi`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from datafed.hazmat import RandomSource, sample_discrete_laplace

__all__ = ["DpNoise", "clamp_pairs", "fixed_bound"]


def fixed_bound(bounds: tuple[float, float], bits: int) -> int:
    """The sensitivity of a clamped sum in fixed-point units, ``ceil(max(|lo|,|hi|)·2^bits)``.

    Parameters
    ----------
    bounds
        The column's DP bounds ``(lo, hi)``.
    bits
        Fractional bits of the fixed-point encoding.

    Returns
    -------
    int
        At least 1.
    """
    lo, hi = bounds
    return max(1, math.ceil(Fraction(repr(max(abs(lo), abs(hi)))) * (1 << bits)))


def clamp_pairs(
    pairs: list[tuple[bytes, int]], bounds: tuple[float, float], bits: int
) -> list[tuple[bytes, int]]:
    """Clamp each identifier's fixed-point value to ``bounds`` (rows of one id summed first).

    The unit of privacy is one identifier, so its whole contribution is clamped: one
    identifier then moves the sum by at most :func:`fixed_bound`.

    Parameters
    ----------
    pairs
        ``(identifier encoding, fixed-point value)`` pairs.
    bounds
        The value column's DP bounds ``(lo, hi)``.
    bits
        Fractional bits of the fixed-point encoding.

    Returns
    -------
    list of (bytes, int)
        The pairs with clamped values, in order.
    """
    lo = math.floor(Fraction(repr(bounds[0])) * (1 << bits))
    hi = math.ceil(Fraction(repr(bounds[1])) * (1 << bits))
    return [(w, min(max(t, lo), hi)) for w, t in pairs]


@dataclass(frozen=True)
class DpNoise:
    """The noise of one release: epsilon split evenly between the sum and the size.

    Parameters
    ----------
    epsilon
        The release's epsilon (the smallest of the DP nodes' epsilons), as decimal text.
    sensitivity
        The clamp bound of the values in fixed-point units.
    """

    epsilon: str
    sensitivity: int

    def __post_init__(self) -> None:
        if not self.sensitivity > 0:
            raise ValueError(f"sensitivity must be positive, got {self.sensitivity}")
        if not Fraction(self.epsilon) > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon}")

    @property
    def sum_scale(self) -> Fraction:
        """Laplace scale of the sum noise in fixed-point units: ``B / (eps/2)``."""
        return Fraction(self.sensitivity) / (Fraction(self.epsilon) / 2)

    @property
    def size_scale(self) -> Fraction:
        """Laplace scale of the size noise: ``1 / (eps/2)``."""
        return 1 / (Fraction(self.epsilon) / 2)

    def draw(self, rng: RandomSource | None = None) -> tuple[int, int]:
        """Draw ``(sum noise, size noise)``, exact discrete Laplace integers.

        ``rng``: tests only (default: the OS CSPRNG).
        """
        return (
            sample_discrete_laplace(self.sum_scale, rng),
            sample_discrete_laplace(self.size_scale, rng),
        )

    def stddevs(self, bits: int) -> tuple[float, float]:
        """Standard deviations ``(sum in value units, size)``; ``sqrt(2)·scale`` as for queries."""
        return (
            math.sqrt(2) * float(self.sum_scale) / (1 << bits),
            math.sqrt(2) * float(self.size_scale),
        )
