"""The node's privacy budget per requester and dataset, kept consistent with its ledger.

The ledger is the durable truth: every operation that spends privacy writes its epsilon
on one ledger entry (queries, intersection-sums and training rounds alike). A
:class:`LedgerBudget` replays those entries into one
:class:`~datafed.protocols.PrivacyAccountant` per (requester, dataset) when the node
starts, then charges new operations through the same accountants, so every kind of
operation draws on one budget and a restart forgets nothing.

Budgets come from the dataset policy (``[datasets.policy.dp]``, see
:func:`nodes.budget.dp_limits`); a dataset without one records epsilon but refuses
nothing. Composition is basic (sums of epsilon; delta is recorded in the entry's details).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from audit import Ledger
from audit.records import decode_leaf
from datafed.protocols import PrivacyAccountant
from datafed.protocols import errors as protocol_errors
from nodes.errors import BudgetExhausted

__all__ = ["BudgetBook", "LedgerBudget"]

Limit = tuple[float, float] | None


class BudgetBook(Protocol):
    """A node's privacy budgets (one per requester and dataset)."""

    def check(self, requester: str, dataset: str, epsilon: float) -> None:
        """Raise :class:`BudgetExhausted` if ``epsilon`` more would not fit (nothing spent)."""
        ...

    def charge(self, requester: str, dataset: str, epsilon: float) -> None:
        """Spend ``epsilon`` or raise :class:`BudgetExhausted` (nothing spent)."""
        ...


class LedgerBudget:
    """Budgets replayed from the ledger's epsilon entries, then charged as operations run.

    Parameters
    ----------
    ledger : audit.Ledger
        The node's ledger (read once at start).
    limits : callable
        ``dataset -> (epsilon, delta)`` budget, or ``None`` for no limit.
    """

    def __init__(self, ledger: Ledger, limits: Callable[[str], Limit]) -> None:
        self._limits = limits
        self._books: dict[tuple[str, str], PrivacyAccountant] = {}
        self._unlimited: dict[tuple[str, str], float] = {}
        self._exhausted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        size = ledger.head().size
        for start in range(0, size, 1024):
            for leaf in ledger.leaves(start, min(size, start + 1024)):
                _, rec = decode_leaf(leaf)
                if rec.epsilon > 0:
                    self._replay(rec.requester, rec.dataset, rec.epsilon)

    def _book(self, key: tuple[str, str]) -> PrivacyAccountant | None:
        if key not in self._books:
            limit = self._limits(key[1])
            if limit is None:
                return None
            self._books[key] = PrivacyAccountant(limit[0], limit[1], composition="basic")
        return self._books[key]

    def _replay(self, requester: str, dataset: str, epsilon: float) -> None:
        key = (requester, dataset)
        book = self._book(key)
        if book is None:
            self._unlimited[key] = self._unlimited.get(key, 0.0) + epsilon
            return
        try:
            book.charge(epsilon, label="replayed from the ledger")
        except protocol_errors.BudgetExhausted:
            self._exhausted.add(key)  # spent beyond a budget lowered since: stay exhausted

    def spent(self, requester: str, dataset: str) -> float:
        """Epsilon spent so far by ``requester`` on ``dataset``."""
        key = (requester, dataset)
        with self._lock:
            book = self._book(key)
            return float(book.spent()[0]) if book is not None else self._unlimited.get(key, 0.0)

    def _apply(self, requester: str, dataset: str, epsilon: float, *, spend: bool) -> None:
        if epsilon <= 0:
            return
        key = (requester, dataset)
        with self._lock:
            book = self._book(key)
            if book is None:
                if spend:
                    self._unlimited[key] = self._unlimited.get(key, 0.0) + epsilon
                return
            left = 0.0 if key in self._exhausted else float(book.remaining()[0])
            if epsilon > left + 1e-12:
                raise BudgetExhausted(
                    f"privacy budget of {requester!r} on {dataset!r} is exhausted: "
                    f"asked epsilon={epsilon:g}, left {left:g}"
                )
            if spend:
                try:
                    book.charge(epsilon, label="operation")
                except protocol_errors.BudgetExhausted as exc:
                    raise BudgetExhausted(str(exc)) from exc

    def check(self, requester: str, dataset: str, epsilon: float) -> None:
        """Raise :class:`BudgetExhausted` if ``epsilon`` more would not fit."""
        self._apply(requester, dataset, epsilon, spend=False)

    def charge(self, requester: str, dataset: str, epsilon: float) -> None:
        """Spend ``epsilon`` or raise :class:`BudgetExhausted`."""
        self._apply(requester, dataset, epsilon, spend=True)
