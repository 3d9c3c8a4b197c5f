"""The node's one privacy budget per (requester, dataset), kept consistent with its ledger.

The ledger is the durable truth: every admitted operation that spends privacy carries its
epsilon on its ``approved`` entry (queries, intersection-sums and training jobs alike;
older ledgers carried it on ``released``). A :class:`LedgerBudget` replays those entries
into one :class:`~datafed.protocols.PrivacyAccountant` per (requester, dataset) when the
node starts, then charges new admissions through the same accountants, so every kind of
operation draws on one budget and a restart forgets nothing. The policy engine charges
*at admission*, in the same critical section as the ``approved`` entry
(:mod:`nodes.policy.engine`): an admitted request has spent its epsilon whatever happens
next. Limits come from each dataset's ``[datasets.policy.dp]`` section; a dataset without
one records epsilon but refuses nothing. Composition is basic (sums of epsilon).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from datafed.protocols import PrivacyAccountant
from datafed.protocols import errors as protocol_errors
from nodes.config import NodeConfig
from nodes.errors import BudgetExhausted

__all__ = ["LedgerBudget", "dp_limits", "shared_budgets"]

Limit = tuple[float, float] | None


class LedgerBudget:
    """Budgets replayed from the ledger's epsilon entries, then charged as operations run.

    Parameters
    ----------
    limits : callable
        ``dataset -> (epsilon, delta)`` budget, or ``None`` for no limit.
    shared : callable
        ``dataset -> bool``: whether every requester draws on one budget of the dataset
        (``budget_scope = "dataset"``, so colluding requesters cannot add up budgets)
        rather than each on its own.
    """

    def __init__(
        self, limits: Callable[[str], Limit], shared: Callable[[str], bool] = lambda ds: False
    ) -> None:
        self._limits = limits
        self._shared = shared
        self._books: dict[tuple[str, str], PrivacyAccountant] = {}
        self._unlimited: dict[tuple[str, str], float] = {}
        self._exhausted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _book(self, key: tuple[str, str]) -> PrivacyAccountant | None:
        if key not in self._books:
            limit = self._limits(key[1])
            if limit is None:
                return None
            self._books[key] = PrivacyAccountant(limit[0], limit[1], composition="basic")
        return self._books[key]

    def _key(self, requester: str, dataset: str) -> tuple[str, str]:
        return ("*" if self._shared(dataset) else requester, dataset)

    def _owner(self, key: tuple[str, str]) -> str:
        who, dataset = key
        if who == "*":
            return f"{dataset!r} (one budget for every requester)"
        return f"{who!r} on {dataset!r}"

    def replay(self, requester: str, dataset: str, epsilon: float) -> None:
        """Count an epsilon already spent (an entry of the ledger, read at start)."""
        if epsilon <= 0:
            return
        key = self._key(requester, dataset)
        book = self._book(key)
        if book is None:
            self._unlimited[key] = self._unlimited.get(key, 0.0) + epsilon
            return
        try:
            book.charge(epsilon, label="replayed from the ledger")
        except protocol_errors.BudgetExceeded:
            self._exhausted.add(key)  # spent beyond a budget lowered since: stay exhausted

    def spent(self, requester: str, dataset: str) -> float:
        """Epsilon spent so far on ``dataset`` from the budget ``requester`` draws on."""
        key = self._key(requester, dataset)
        with self._lock:
            book = self._book(key)
            return float(book.spent()[0]) if book is not None else self._unlimited.get(key, 0.0)

    def _apply(self, requester: str, dataset: str, epsilon: float, *, spend: bool) -> None:
        if epsilon <= 0:
            return
        key = self._key(requester, dataset)
        with self._lock:
            book = self._book(key)
            if book is None:
                if spend:
                    self._unlimited[key] = self._unlimited.get(key, 0.0) + epsilon
                return
            left = 0.0 if key in self._exhausted else float(book.remaining()[0])
            if epsilon > left + 1e-12:
                raise BudgetExhausted(
                    f"privacy budget of {self._owner(key)} is exhausted: "
                    f"asked epsilon={epsilon:g}, left {left:g}"
                )
            if spend:
                try:
                    book.charge(epsilon, label="operation")
                except protocol_errors.BudgetExceeded as exc:
                    raise BudgetExhausted(str(exc)) from exc

    def check(self, requester: str, dataset: str, epsilon: float) -> None:
        """Raise :class:`BudgetExhausted` if ``epsilon`` more would not fit."""
        self._apply(requester, dataset, epsilon, spend=False)

    def charge(self, requester: str, dataset: str, epsilon: float) -> None:
        """Spend ``epsilon`` or raise :class:`BudgetExhausted`."""
        self._apply(requester, dataset, epsilon, spend=True)


def shared_budgets(config: NodeConfig) -> Callable[[str], bool]:
    """``dataset -> bool``: whether its DP budget is one for every requester."""

    def shared(dataset: str) -> bool:
        ds = config.dataset(dataset)
        return (
            ds is not None and ds.policy.dp is not None and ds.policy.dp.budget_scope == "dataset"
        )

    return shared


def dp_limits(config: NodeConfig) -> Callable[[str], Limit]:
    """``dataset -> (epsilon, delta)`` from each policy's DP section (``None``: no limit)."""

    def limit(dataset: str) -> Limit:
        ds = config.dataset(dataset)
        if ds is None or ds.policy.dp is None:
            return None
        return ds.policy.dp.budget

    return limit
