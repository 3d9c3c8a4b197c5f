"""The node's one policy engine: every use of a dataset is admitted here, once, atomically.

Every operation -- a query, one side of an intersection-sum, a training job -- asks
:meth:`PolicyEngine.admit` with a :class:`Use`; what comes back is a :class:`Grant`, or a
:class:`~nodes.errors.NodeError` that the caller records as ``denied``. Admission is
spending (``docs/policy.md``):

1. the pure rules (:func:`nodes.policy.rules.check`) and the sign-offs the dataset needs
   (:mod:`nodes.policy.signoff`) -- nothing is changed by a refusal here;
2. then, in one critical section per dataset: the job id must be new for this requester
   (a statement, and the sign-offs bound to it, are used once), the privacy budget must
   hold the use's epsilon and delta (a delta beyond the policy's ``max_delta_per_job`` is
   refused before), the ``approved`` entry carrying them is appended durably, and only
   then are the job id claimed and the cost charged.

From then on the cost is spent whatever happens: a computation that fails, a group
refused for being small, a protocol step that never comes. Nothing after admission
refunds or says by how much or which rows (a refusal must not be an oracle).
Protocol steps and the later steps of an intersection-sum continue a grant; they are not
new admissions. State -- budgets and claimed job ids -- is replayed from the ledger when
the node starts, so a restart forgets nothing.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from audit import Ledger
from audit.records import decode_leaf
from nodes.config import DatasetPolicy, NodeConfig
from nodes.errors import InvalidRequest, PermissionDenied
from nodes.policy.budget import (
    LedgerBudget,
    delta_details,
    dp_limits,
    recorded_delta,
    shared_budgets,
)
from nodes.policy.rules import check as check_rules
from nodes.policy.rules import dataset_of
from nodes.policy.signoff import check_signoffs
from nodes.policy.use import Operation, Use

__all__ = ["ADMITTING_OPERATIONS", "Grant", "Operation", "PolicyEngine", "Recorder", "Use"]

#: Ledger operations whose ``approved`` entries claim a job id (``fl_train`` is training).
ADMITTING_OPERATIONS = frozenset({"query", "intersection_sum", "fl_train", "collect"})
_REPLAY_CHUNK = 1024


@dataclass(frozen=True)
class Grant:
    """An admitted use: its ``approved`` entry and what it spent."""

    use: Use
    index: int
    epsilon: float
    policy: DatasetPolicy
    delta: float = 0.0


class Recorder(Protocol):
    """Appends one entry about the current request; returns its index once durable."""

    def __call__(
        self,
        *,
        decision: str,
        reason: str,
        epsilon: float = 0.0,
        details: Mapping[str, str] | None = None,
    ) -> Awaitable[int]:
        """Record the entry."""
        ...


class PolicyEngine:
    """Admission for every operation of one node (see module docs).

    Parameters
    ----------
    config
        The node configuration (datasets and policies).
    columns
        ``dataset -> exposed columns`` as the store found them.
    node, ca_pem
        This node's name and the federation CA (to verify sign-offs).
    """

    def __init__(
        self,
        config: NodeConfig,
        columns: Mapping[str, Sequence[str]],
        node: str,
        ca_pem: bytes,
    ) -> None:
        self.config = config
        self._columns = dict(columns)
        self._node = node
        self._ca = ca_pem
        self.budget = LedgerBudget(*_with_collect_budgets(config))
        self._claimed: set[tuple[str, str]] = set()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def replay(self, ledger: Ledger) -> None:
        """Rebuild budgets and claimed job ids from every entry of ``ledger``."""
        size = ledger.head().size
        for start in range(0, size, _REPLAY_CHUNK):
            for leaf in ledger.leaves(start, min(size, start + _REPLAY_CHUNK)):
                _, rec = decode_leaf(leaf)
                self.budget.replay(
                    rec.requester, rec.dataset, rec.epsilon, recorded_delta(rec.details)
                )
                if rec.decision == "approved" and rec.operation in ADMITTING_OPERATIONS:
                    self._claimed.add((rec.requester, rec.job_id))

    def policy(self, dataset: str) -> DatasetPolicy:
        """The policy of a served dataset (NotFound otherwise)."""
        return dataset_of(self.config, dataset, self._columns.get(dataset)).policy

    def check(self, use: Use) -> str:
        """The pure rules alone (no state, nothing recorded): the reason, or the refusal."""
        return check_rules(use, self.config, self._columns.get(use.dataset))

    def epsilon_of(self, use: Use) -> float:
        """What ``use`` spends: its own epsilon, or the dataset's per-query epsilon under DP."""
        if use.epsilon is not None:
            return use.epsilon
        dp = self.policy(use.dataset).dp
        return dp.epsilon_per_query if dp is not None else 0.0

    async def admit(self, use: Use, record: Recorder) -> Grant:
        """Admit ``use`` or raise the refusal (see module docs); ``record`` writes entries."""
        reason = self.check(use)
        # A collection task has no dataset policy: its rules are the task's (rules._collect).
        policy = self.policy(use.dataset) if use.operation != "collect" else DatasetPolicy()
        details = dict(use.details)
        if use.statement is not None:
            details["statement"] = use.statement.digest
        if use.operation == "query":
            assert use.statement is not None
            details.update(
                check_signoffs(
                    self._node, self._ca, policy.required_signoff, use.statement, use.signoffs
                )
            )
        epsilon, delta = self.epsilon_of(use), use.delta
        if use.operation != "collect":  # a task's noise is its operator's, not asked for
            self.check_delta(use.dataset, delta)
        details.update(delta_details(delta))
        if epsilon > 0 and policy.dp is not None:  # the budget this node enforces, for audits
            details["budget_epsilon"] = repr(float(policy.dp.budget_epsilon))
            details["budget_scope"] = policy.dp.budget_scope
        key = (use.requester.name, use.header.job_id)
        async with self._locks[use.dataset]:  # budget of (requester, dataset): one section
            if key in self._claimed:
                raise InvalidRequest(f"job id {key[1]!r} was already used; each job runs once")
            self.budget.check(key[0], use.dataset, epsilon, delta)
            self._claimed.add(key)  # no await since the check: job ids are claimed atomically
            try:
                index = await record(
                    decision="approved", reason=reason, epsilon=epsilon, details=details
                )
            except BaseException:
                self._claimed.discard(key)
                raise
            self.budget.charge(key[0], use.dataset, epsilon, delta)
        return Grant(use, index, epsilon, policy, delta)

    def check_delta(self, dataset: str, delta: float) -> None:
        """Refuse a job whose delta (all its releases together) exceeds the policy's.

        Pure and before admission: the refusal depends on the request and the policy only.
        """
        if delta <= 0:
            return
        dp = self.policy(dataset).dp
        most = dp.delta_per_job if dp is not None else 1.0
        if delta > most:
            raise PermissionDenied(
                f"the job's delta {delta:g} exceeds the {most:g} dataset {dataset!r} allows "
                "per job (max_delta_per_job)"
            )

    def check_job(self, requester: str, dataset: str, epsilon: float, delta: float) -> None:
        """Before admission: a job that will spend ``(epsilon, delta)`` in all is allowed.

        Its delta within the policy's per-job maximum (:meth:`check_delta`, a refusal),
        and both within what is left of the budget now (``RESOURCE_EXHAUSTED``). Each of
        its releases is still charged when it happens (:meth:`charge`).
        """
        self.check_delta(dataset, delta)
        self.budget.check(requester, dataset, epsilon, delta)

    async def charge(
        self,
        requester: str,
        dataset: str,
        epsilon: float,
        record: Callable[[], Awaitable[int]],
        delta: float = 0.0,
    ) -> int:
        """Spend ``(epsilon, delta)`` for a release of an admitted job, with its entry.

        For the releases that each carry their own cost (a training round's update, an
        evaluation): the budget is checked, ``record`` appends the entry (which must carry
        ``epsilon`` and :func:`~nodes.policy.budget.delta_details` of ``delta``, so that
        a restart replays the charge), and the cost is charged, in the same critical
        section as admissions of the dataset. A cancelled caller does not interrupt it: once
        the entry is appended the charge follows (the ledger and the budget never differ).
        """

        async def section() -> int:
            async with self._locks[dataset]:
                self.budget.check(requester, dataset, epsilon, delta)
                index = await record()
                self.budget.charge(requester, dataset, epsilon, delta)
            return index

        task = asyncio.ensure_future(section())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise


def _with_collect_budgets(config: NodeConfig) -> tuple[Any, Any]:
    """Budget limits and scopes of datasets, and of collection tasks with noise."""
    limits, shared = dp_limits(config), shared_budgets(config)
    tasks = {t.name: t.dp for t in config.collect if t.dp is not None}

    def limit(name: str) -> tuple[float, float] | None:
        dp = tasks.get(name)
        return (dp.budget_epsilon, dp.budget_delta) if dp is not None else limits(name)

    def scope(name: str) -> bool:
        dp = tasks.get(name)
        return dp.budget_scope == "task" if dp is not None else shared(name)

    return limit, scope
