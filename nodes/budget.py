"""The node's one privacy budget per (requester, dataset), shared by every operation.

The ledger is the durable truth: each release that spends privacy carries its epsilon on
its ledger entry.  :class:`~nodes.fl.budget.LedgerBudget` replays those entries when the
node starts and charges new operations -- queries, intersection-sums, training rounds --
against the same accountants, so a restart forgets nothing and no kind of operation has
a budget of its own.  Limits come from each dataset's ``[datasets.policy.dp]`` section.
"""

from __future__ import annotations

from collections.abc import Callable

from nodes.config import NodeConfig
from nodes.fl.budget import BudgetBook, LedgerBudget

__all__ = ["BudgetBook", "LedgerBudget", "dp_limits"]


def dp_limits(config: NodeConfig) -> Callable[[str], tuple[float, float] | None]:
    """``dataset -> (epsilon, delta)`` from each policy's DP section (``None``: no limit)."""

    def limit(dataset: str) -> tuple[float, float] | None:
        ds = config.dataset(dataset)
        if ds is None or ds.policy.dp is None:
            return None
        return ds.policy.dp.budget

    return limit
