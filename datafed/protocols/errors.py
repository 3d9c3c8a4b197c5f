"""Errors raised by :mod:`datafed.protocols`.

Hierarchy::

    MachineError          (a DatafedError)
    ├── RoundError        a method was called out of the protocol's round order
    ├── ProtocolAbort     too few parties remain to finish (below the threshold)
    ├── InvalidMessage    a peer's message failed a check (detail-free)
    └── BudgetExceeded    a privacy-budget charge does not fit what is left

``InvalidMessage`` never says which check failed.  ``BudgetExceeded`` is not a
verification failure: it reports what was requested and what is left, since the
requester is entitled to know its own budget.
"""

from __future__ import annotations

from fractions import Fraction

from datafed.errors import DatafedError


class MachineError(DatafedError):
    """Base class of every error in :mod:`datafed.protocols` (a protocol state machine refused)."""


class RoundError(MachineError):
    """A protocol method was called in the wrong round."""


class ProtocolAbort(MachineError):
    """Too few parties remain for the protocol to finish."""


class InvalidMessage(MachineError):
    """A message from a peer failed validation (no detail on purpose)."""

    def __init__(self) -> None:
        super().__init__("invalid protocol message")


class BudgetExceeded(MachineError):
    """A privacy-budget charge exceeds what is left.

    Parameters
    ----------
    requested_epsilon, requested_delta : Fraction
        The refused charge.
    remaining_epsilon, remaining_delta : Fraction
        What is left (see ``PrivacyAccountant.remaining``).
    """

    def __init__(
        self,
        requested_epsilon: Fraction,
        requested_delta: Fraction,
        remaining_epsilon: Fraction,
        remaining_delta: Fraction,
    ) -> None:
        self.requested_epsilon = requested_epsilon
        self.requested_delta = requested_delta
        self.remaining_epsilon = remaining_epsilon
        self.remaining_delta = remaining_delta
        super().__init__(
            f"privacy budget exhausted: requested epsilon={float(requested_epsilon):.6g}, "
            f"delta={float(requested_delta):.6g}; "
            f"remaining epsilon={float(remaining_epsilon):.6g}, "
            f"delta={float(remaining_delta):.6g}"
        )
