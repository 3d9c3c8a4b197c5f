"""A differential-privacy budget accountant with basic and advanced composition.

Every operation that releases noisy output (a query, an intersection-sum, a
training round) charges ``(ε_i, δ_i)``.  A charge is accepted when the composed
guarantee still fits the budget ``(E, D)`` under at least one valid theorem:

* basic composition (Dwork & Roth 2014, Theorem 3.16):
  ``(Σ ε_i, Σ δ_i)``;
* advanced composition, heterogeneous form (Kairouz, Oh & Viswanath, ICML 2015;
  Dwork, Rothblum & Vadhan, FOCS 2010 for equal ε): for any slack ``δ' > 0``,
  ``(√(2 ln(1/δ')·Σ ε_i²) + Σ ε_i·(e^{ε_i} − 1),  Σ δ_i + δ')``.

The whole history is simultaneously DP under both, so accepting a charge when
either fits is sound.  Amounts are kept as exact fractions (a float ``x`` becomes
the decimal it prints as), so ten charges of 0.1 spend exactly 1.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from datafed.protocols.errors import BudgetExhausted

Composition = Literal["basic", "advanced", "best"]


def _exact(value: float | int | Fraction, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return Fraction(repr(value))
    return Fraction(value)


@dataclass(frozen=True)
class Charge:
    """One accepted charge: ``(epsilon, delta)`` and a free-form label."""

    epsilon: Fraction
    delta: Fraction
    label: str


class PrivacyAccountant:
    """Track privacy loss against a budget ``(epsilon, delta)``.

    Parameters
    ----------
    epsilon : float or Fraction
        Total ε budget, positive.
    delta : float or Fraction, optional
        Total δ budget in ``[0, 1)``; default 0 (advanced composition needs ``delta > 0``).
    composition : {"basic", "advanced", "best"}, optional
        Which theorem(s) may justify a charge; ``"best"`` (default) accepts either.
    slack : float or Fraction, optional
        ``δ'`` of advanced composition; default half of ``delta``.
    """

    def __init__(
        self,
        epsilon: float | Fraction,
        delta: float | Fraction = 0,
        *,
        composition: Composition = "best",
        slack: float | Fraction | None = None,
    ) -> None:
        self.epsilon = _exact(epsilon, "epsilon")
        self.delta = _exact(delta, "delta")
        if self.epsilon <= 0:
            raise ValueError(f"epsilon budget must be positive, got {float(self.epsilon)}")
        if not 0 <= self.delta < 1:
            raise ValueError(f"delta budget must be in [0, 1), got {float(self.delta)}")
        if composition not in ("basic", "advanced", "best"):
            raise ValueError(f"composition must be basic, advanced or best, got {composition!r}")
        self.slack = self.delta / 2 if slack is None else _exact(slack, "slack")
        if composition == "advanced" and not 0 < self.slack <= self.delta:
            raise ValueError("advanced composition needs 0 < slack <= delta")
        self.composition = composition
        self._charges: list[Charge] = []
        self._lock = threading.Lock()

    @property
    def charges(self) -> tuple[Charge, ...]:
        """Every accepted charge, in order."""
        return tuple(self._charges)

    def spent(self) -> tuple[Fraction, Fraction]:
        """Return ``(Σ ε_i, Σ δ_i)``: the loss under basic composition.

        Returns
        -------
        tuple of Fraction
            Spent epsilon and delta.
        """
        return (
            sum((c.epsilon for c in self._charges), Fraction(0)),
            sum((c.delta for c in self._charges), Fraction(0)),
        )

    def remaining(self) -> tuple[Fraction, Fraction]:
        """Return what is left under basic composition, ``(E − Σε, D − Σδ)``.

        Returns
        -------
        tuple of Fraction
            Remaining epsilon and delta.
        """
        eps, delta = self.spent()
        return self.epsilon - eps, self.delta - delta

    def advanced_epsilon(self, charges: tuple[Charge, ...] | None = None) -> float:
        """Return the ε of advanced composition with slack ``δ'`` over ``charges``.

        Parameters
        ----------
        charges : tuple of Charge, optional
            Defaults to the accepted charges.

        Returns
        -------
        float
            ``√(2 ln(1/δ')·Σε²) + Σ ε(e^ε − 1)``; infinity when ``δ' = 0``.
        """
        items = self._charges if charges is None else charges
        if self.slack <= 0:
            return math.inf
        sq = sum(float(c.epsilon) ** 2 for c in items)
        drift = sum(float(c.epsilon) * math.expm1(float(c.epsilon)) for c in items)
        return math.sqrt(2 * math.log(1 / float(self.slack)) * sq) + drift

    def _fits(self, charges: tuple[Charge, ...]) -> bool:
        eps = sum((c.epsilon for c in charges), Fraction(0))
        delta = sum((c.delta for c in charges), Fraction(0))
        basic = eps <= self.epsilon and delta <= self.delta
        advanced = (
            self.slack > 0
            and delta + self.slack <= self.delta
            and self.advanced_epsilon(charges) <= float(self.epsilon)
        )
        if self.composition == "basic":
            return basic
        if self.composition == "advanced":
            return advanced
        return basic or advanced

    def charge(
        self, epsilon: float | Fraction, delta: float | Fraction = 0, *, label: str = ""
    ) -> Charge:
        """Charge ``(epsilon, delta)`` or refuse it, atomically.

        Parameters
        ----------
        epsilon : float or Fraction
            ε of the operation, positive.
        delta : float or Fraction, optional
            δ of the operation, in ``[0, 1)``.
        label : str, optional
            What the charge is for (for the caller's records).

        Returns
        -------
        Charge
            The accepted charge.

        Raises
        ------
        BudgetExhausted
            If no composition theorem keeps the total within the budget; nothing is spent.
        """
        eps, delta_ = _exact(epsilon, "epsilon"), _exact(delta, "delta")
        if eps <= 0:
            raise ValueError(f"charged epsilon must be positive, got {float(eps)}")
        if not 0 <= delta_ < 1:
            raise ValueError(f"charged delta must be in [0, 1), got {float(delta_)}")
        new = Charge(eps, delta_, label)
        with self._lock:
            if not self._fits((*self._charges, new)):
                left_eps, left_delta = self.remaining()
                raise BudgetExhausted(eps, delta_, left_eps, left_delta)
            self._charges.append(new)
        return new
