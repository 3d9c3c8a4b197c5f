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

from datafed.protocols.errors import BudgetExceeded

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
        self._eps_sum = Fraction(0)
        self._delta_sum = Fraction(0)
        self._sq = 0.0  # Σ ε_i², for advanced composition
        self._drift = 0.0  # Σ ε_i (e^ε_i − 1)
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
        return self._eps_sum, self._delta_sum

    def guarantee(self) -> tuple[Fraction, Fraction]:
        """Return the tightest composed ``(ε, δ)`` allowed by the composition setting.

        Returns
        -------
        tuple of Fraction
            Basic ``(Σε, Σδ)`` or advanced ``(ε', Σδ + δ')``, whichever is allowed
            and fits the budget with the smaller ε (basic when neither fits).
        """
        basic = self.spent()
        if self.composition == "basic" or self.slack <= 0 or not self._charges:
            return basic
        advanced = (Fraction(self.advanced_epsilon()), basic[1] + self.slack)
        if self.composition == "advanced":
            return advanced
        if advanced[1] <= self.delta and advanced[0] < basic[0]:
            return advanced
        return basic

    def remaining(self) -> tuple[Fraction, Fraction]:
        """Return what is left of the budget after :meth:`guarantee`, floored at zero.

        Returns
        -------
        tuple of Fraction
            Remaining epsilon and delta.
        """
        eps, delta = self.guarantee()
        return max(self.epsilon - eps, Fraction(0)), max(self.delta - delta, Fraction(0))

    def advanced_epsilon(self) -> float:
        """Return the ε of advanced composition with slack ``δ'`` over the accepted charges.

        Returns
        -------
        float
            ``√(2 ln(1/δ')·Σε²) + Σ ε(e^ε − 1)``; infinity when ``δ' = 0``.
        """
        return self._advanced(self._sq, self._drift)

    def _advanced(self, sq: float, drift: float) -> float:
        if self.slack <= 0:
            return math.inf
        return math.sqrt(2 * math.log(1 / float(self.slack)) * sq) + drift

    def _fits(self, new: Charge) -> bool:
        eps, delta = self._eps_sum + new.epsilon, self._delta_sum + new.delta
        e = float(new.epsilon)
        basic = eps <= self.epsilon and delta <= self.delta
        advanced = (
            self.slack > 0
            and delta + self.slack <= self.delta
            and self._advanced(self._sq + e * e, self._drift + e * math.expm1(e))
            <= float(self.epsilon)
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
        BudgetExceeded
            If no composition theorem keeps the total within the budget; nothing is spent.
        """
        eps, delta_ = _exact(epsilon, "epsilon"), _exact(delta, "delta")
        if eps <= 0:
            raise ValueError(f"charged epsilon must be positive, got {float(eps)}")
        if not 0 <= delta_ < 1:
            raise ValueError(f"charged delta must be in [0, 1), got {float(delta_)}")
        new = Charge(eps, delta_, label)
        with self._lock:
            if not self._fits(new):
                left_eps, left_delta = self.remaining()
                raise BudgetExceeded(eps, delta_, left_eps, left_delta)
            self._charges.append(new)
            self._eps_sum += eps
            self._delta_sum += delta_
            self._sq += float(eps) ** 2
            self._drift += float(eps) * math.expm1(float(eps))
        return new
