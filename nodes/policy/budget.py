"""The node's one privacy accountant per (scope, dataset), kept consistent with its ledger.

The ledger is the durable truth: every admitted operation that spends privacy carries its
epsilon on its entry (the ``approved`` entry of a query, an intersection-sum side or a
collection; the ``released`` entry of each training round or evaluation; older ledgers
carried a query's on ``released``), and its delta, when it spends one, in the entry's
public ``details["delta"]`` (:func:`delta_details`, docs/ledger.md). A
:class:`LedgerBudget` replays those entries into one
:class:`~datafed.protocols.PrivacyAccountant` per (scope, dataset) when the node starts,
then charges new releases through the same accountants, so every kind of operation draws
on one budget in (epsilon, delta) and a restart forgets nothing. The scope is the dataset
itself (``budget_scope = "dataset"``, the default: one budget for every requester) or the
requester. The policy engine charges in the same critical section as the entry that
records the charge (:mod:`nodes.policy.engine`): an admitted request has spent its
epsilon and delta whatever happens next. Limits come from each dataset's
``[datasets.policy.dp]`` section (``budget_epsilon``, ``budget_delta``); a dataset without
one records what is spent but refuses nothing. Composition is basic: the epsilons add up,
and so do the deltas (Dwork and Roth 2014, Theorem 3.16).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from fractions import Fraction

from datafed.protocols import PrivacyAccountant
from datafed.protocols import errors as protocol_errors
from nodes.config import NodeConfig
from nodes.errors import BudgetExhausted

__all__ = ["LedgerBudget", "delta_details", "dp_limits", "recorded_delta", "shared_budgets"]

Limit = tuple[float, float] | None
Key = tuple[str, str]
#: The public detail that carries an entry's delta (absent: 0).
DELTA_KEY = "delta"
_ZERO = Fraction(0)


def delta_details(delta: float) -> dict[str, str]:
    """The details that record ``delta`` on an entry (none for a delta of 0)."""
    return {DELTA_KEY: repr(float(delta))} if delta > 0 else {}


def recorded_delta(details: Mapping[str, str]) -> float:
    """The delta an entry records (0 if none); ``inf`` for a malformed value.

    A malformed value can only come from an edited ledger: it counts as more than any
    budget, so the budget it belongs to stays exhausted rather than forgetting a charge.
    """
    text = details.get(DELTA_KEY)
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        return math.inf
    return value if math.isfinite(value) and value >= 0 else math.inf


class LedgerBudget:
    """Budgets replayed from the ledger's charged entries, then charged as operations run.

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
        self._books: dict[Key, PrivacyAccountant] = {}
        self._unlimited: dict[Key, tuple[float, float]] = {}
        self._exhausted: set[Key] = set()
        self._lock = threading.Lock()

    def _book(self, key: Key) -> PrivacyAccountant | None:
        if key not in self._books:
            limit = self._limits(key[1])
            if limit is None:
                return None
            self._books[key] = PrivacyAccountant(limit[0], limit[1], composition="basic")
        return self._books[key]

    def _key(self, requester: str, dataset: str) -> Key:
        return ("*" if self._shared(dataset) else requester, dataset)

    def _owner(self, key: Key) -> str:
        who, dataset = key
        if who == "*":
            return f"{dataset!r} (one budget for every requester)"
        return f"{who!r} on {dataset!r}"

    def _add_unlimited(self, key: Key, epsilon: float, delta: float) -> None:
        eps, dlt = self._unlimited.get(key, (0.0, 0.0))
        self._unlimited[key] = (eps + epsilon, dlt + delta)

    def replay(self, requester: str, dataset: str, epsilon: float, delta: float = 0.0) -> None:
        """Count an (epsilon, delta) already spent (an entry of the ledger, read at start)."""
        if epsilon <= 0 and delta <= 0:
            return
        key = self._key(requester, dataset)
        book = self._book(key)
        if book is None:
            self._add_unlimited(key, epsilon, delta)
            return
        if epsilon <= 0 or not 0 <= delta < 1:  # only an edited ledger says so
            self._exhausted.add(key)
            return
        try:
            book.charge(epsilon, delta, label="replayed from the ledger")
        except protocol_errors.BudgetExceeded:
            self._exhausted.add(key)  # spent beyond a budget lowered since: stay exhausted

    def spent(self, requester: str, dataset: str) -> float:
        """Epsilon spent so far on ``dataset`` from the budget ``requester`` draws on."""
        return self.spent_both(requester, dataset)[0]

    def spent_both(self, requester: str, dataset: str) -> tuple[float, float]:
        """``(epsilon, delta)`` spent so far from the budget ``requester`` draws on."""
        key = self._key(requester, dataset)
        with self._lock:
            book = self._book(key)
            if book is None:
                return self._unlimited.get(key, (0.0, 0.0))
            eps, delta = book.spent()
            return float(eps), float(delta)

    def most_spent(self, dataset: str) -> float:
        """The most epsilon any one budget of ``dataset`` has spent (the node's metrics)."""
        with self._lock:
            spent = [
                float(self._books[k].spent()[0]) if k not in self._exhausted else math.inf
                for k in self._books
                if k[1] == dataset
            ]
            spent += [e for k, (e, _) in self._unlimited.items() if k[1] == dataset]
        return max(spent, default=0.0)

    def _apply(
        self, requester: str, dataset: str, epsilon: float, delta: float, *, spend: bool
    ) -> None:
        if epsilon <= 0 and delta <= 0:
            return
        if epsilon <= 0:
            raise ValueError("a charge of delta needs a positive epsilon")
        key = self._key(requester, dataset)
        with self._lock:
            book = self._book(key)
            if book is None:
                if spend:
                    self._add_unlimited(key, epsilon, delta)
                return
            exhausted = key in self._exhausted
            left_eps, left_delta = (_ZERO, _ZERO) if exhausted else book.remaining()
            if epsilon > left_eps + 1e-12 or delta > left_delta + 1e-18:
                raise BudgetExhausted(
                    f"privacy budget of {self._owner(key)} is exhausted: asked "
                    f"epsilon={epsilon:g}, delta={delta:g}; left {float(left_eps):g}, "
                    f"{float(left_delta):g}"
                )
            if spend:
                try:
                    book.charge(epsilon, delta, label="operation")
                except protocol_errors.BudgetExceeded as exc:
                    raise BudgetExhausted(str(exc)) from exc

    def check(self, requester: str, dataset: str, epsilon: float, delta: float = 0.0) -> None:
        """Raise :class:`BudgetExhausted` if ``(epsilon, delta)`` more would not fit."""
        self._apply(requester, dataset, epsilon, delta, spend=False)

    def charge(self, requester: str, dataset: str, epsilon: float, delta: float = 0.0) -> None:
        """Spend ``(epsilon, delta)`` or raise :class:`BudgetExhausted`."""
        self._apply(requester, dataset, epsilon, delta, spend=True)


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
