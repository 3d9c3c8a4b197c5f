"""The dataset policy's rules: may this requester use this dataset, this way, for this purpose.

Pure (no I/O, no state): :func:`check` takes one :class:`~nodes.policy.use.Use` of any
operation -- an aggregate query, one side of an intersection-sum, a training job -- and
either returns the reason to record with the approval or raises the
:class:`~nodes.errors.NodeError` to send. What needs state (budget, job ids, sign-offs
already used, released row sets) is the engine's (:mod:`nodes.policy.engine`).

The rules, in the order they are checked (``docs/policy.md``):

1. the caller's role is ``analyst``;
2. the dataset exists and allows the operation (``allowed_operations``, default-deny);
3. the requester and the purpose are allowed;
4. every column read exists and is allowed (``allowed_columns``);
5. per operation -- a query: its aggregates and protection are allowed, its job statement
   names at least ``min_participants`` nodes and every ``required_participants`` node --
   on exact data exactly the dataset's ``consortium`` --, its GROUP BY columns have
   declared values wherever the node reports a domain (a mode that hides groups, or DP),
   and under DP it releases only what DP can (no MIN/MAX, every summed column bounded);
   an intersection-sum: no required sign-off (it carries none); a training job: DP on
   where the dataset requires it, and the model among ``allowed_models`` if set.

A ``collect`` use names a collection task instead of a dataset: after the role, the task
must exist and list the requester among its collectors, for the purpose (docs/collect.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from datafed.fl.spec import model_allowed
from datafed.modes import mode_class
from nodes.config import DatasetConfig, DatasetPolicy, NodeConfig
from nodes.errors import InvalidRequest, NotFound, PermissionDenied
from nodes.policy.dp import check_dp
from nodes.policy.use import Use

__all__ = ["OPERATION_NAMES", "check", "dataset_of", "reports_domain"]

#: How each operation is named in refusals.
OPERATION_NAMES = {
    "query": "aggregate queries",
    "intersection_sum": "intersection_sum",
    "training": "federated training",
    "collect": "collection",
}
_ROLE_VERBS = {
    "query": "run queries",
    "intersection_sum": "run intersection-sums",
    "training": "train models",
    "collect": "collect windows",
}


def dataset_of(config: NodeConfig, name: str, exposed: Sequence[str] | None) -> DatasetConfig:
    """The dataset ``name``, or NotFound if the node does not serve it."""
    ds = config.dataset(name)
    if ds is None or exposed is None:
        raise NotFound(f"unknown dataset {name!r}")
    return ds


def check(use: Use, config: NodeConfig, exposed: Sequence[str] | None) -> str:
    """Apply every rule to ``use``; return the reason to record or raise the refusal.

    Parameters
    ----------
    use
        The requested use.
    config
        The node configuration (datasets and their policies).
    exposed
        The columns the store exposes for ``use.dataset`` (``None``: not served).
    """
    if use.requester.role != "analyst":
        raise PermissionDenied(
            f"role {use.requester.role!r} may not {_ROLE_VERBS[use.operation]}; need 'analyst'"
        )
    if use.operation == "collect":  # a collection task, not a dataset (docs/collect.md)
        return _collect(use, config)
    ds = dataset_of(config, use.dataset, exposed)
    policy = ds.policy
    if use.operation not in policy.allowed_operations:
        raise PermissionDenied(
            f"dataset {use.dataset!r} does not allow {OPERATION_NAMES[use.operation]}"
        )
    if use.requester.name not in policy.allowed_requesters:
        raise PermissionDenied(
            f"requester {use.requester.name!r} is not allowed to use dataset {use.dataset!r}"
        )
    if use.header.purpose not in policy.allowed_purposes:
        raise PermissionDenied(
            f"purpose {use.header.purpose!r} is not allowed for dataset {use.dataset!r}"
        )
    _columns(use, policy, exposed or ())
    if use.operation == "query":
        _query(use, policy)
    elif use.operation == "intersection_sum":
        _intersection_sum(use, policy)
    else:
        _training(use, policy)
    return f"policy allows {use.operation}"


def _columns(use: Use, policy: DatasetPolicy, exposed: Sequence[str]) -> None:
    unknown = sorted(use.columns - set(exposed))
    if unknown:
        raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {use.dataset!r}")
    if policy.allowed_columns is not None:
        refused = sorted(use.columns - set(policy.allowed_columns))
        if refused:
            raise PermissionDenied(f"column {refused[0]!r} of {use.dataset!r} is not allowed")


def _query(use: Use, policy: DatasetPolicy) -> None:
    assert use.spec is not None and use.statement is not None
    for agg in use.spec.aggregates:
        if agg.func not in policy.allowed_aggregates:
            raise PermissionDenied(
                f"aggregate {agg.func.upper()} is not allowed on {use.dataset!r}"
            )
    if use.protection not in policy.allowed_protections:
        raise PermissionDenied(
            f"protection {use.protection!r} is not allowed for {use.dataset!r} "
            f"(allowed: {', '.join(policy.allowed_protections)})"
        )
    roster = use.statement.statement.roster
    _consortium(use, policy, roster)
    if len(roster) < policy.min_participants:
        raise PermissionDenied(
            f"dataset {use.dataset!r} takes part only in jobs of at least "
            f"{policy.min_participants} nodes; the job names {len(roster)}"
        )
    missing = sorted(set(policy.required_participants) - set(roster))
    if missing:
        raise PermissionDenied(
            f"dataset {use.dataset!r} takes part only in jobs that include {', '.join(missing)}"
        )
    if reports_domain(policy, use.protection):
        undeclared = [c for c in use.spec.group_by if not policy.group_domains.get(c)]
        if undeclared:
            raise PermissionDenied(
                f"GROUP BY {undeclared[0]} needs the values of {undeclared[0]!r} declared in "
                f"{use.dataset!r}'s policy (group_domains): this node reports only declared "
                "groups and one remainder"
            )
    if policy.dp is not None:
        check_dp(use.spec, policy.dp)


def reports_domain(policy: DatasetPolicy, protection: str) -> bool:
    """Whether a query reports the declared group domain (not the node's own groups).

    Modes that hide groups always do; under DP every mode does, because which keys a node
    has is itself data (``datafed.query.domain``).
    """
    return policy.dp is not None or mode_class(protection).hides_groups


def _consortium(use: Use, policy: DatasetPolicy, roster: Sequence[str]) -> None:
    """Exact data: the job names exactly the dataset's consortium (no subset, no stranger)."""
    if policy.dp is not None:
        return
    if set(roster) != set(policy.consortium):
        raise PermissionDenied(
            f"dataset {use.dataset!r} holds exact data: a query names exactly its consortium "
            f"({', '.join(sorted(policy.consortium))}); totals over other node sets could be "
            "subtracted from each other"
        )


def _intersection_sum(use: Use, policy: DatasetPolicy) -> None:
    # Fail closed on what intersection-sum cannot honour: another agency's approval.
    if policy.required_signoff:
        raise PermissionDenied(
            f"dataset {use.dataset!r} requires sign-off by {', '.join(policy.required_signoff)}; "
            "intersection_sum carries no sign-offs and is refused"
        )
    for col in sorted(use.columns - use.summed):
        if col not in policy.identifier_columns:
            raise PermissionDenied(
                f"column {col!r} is not an identifier column of {use.dataset!r} "
                f"(identifier_columns: {', '.join(policy.identifier_columns)}): an "
                "intersection matches on identifiers only"
            )
    if policy.dp is not None:
        for col in sorted(use.summed):
            if col not in policy.dp.bounds:
                raise PermissionDenied(
                    f"column {col!r} has no DP bounds in {use.dataset!r}'s policy"
                )


def _training(use: Use, policy: DatasetPolicy) -> None:
    if not model_allowed(use.model, policy.allowed_models):  # a factory is code the node runs
        raise PermissionDenied(f"model {use.model!r} is not in allowed_models")
    if policy.dp is not None and not use.dp_requested:
        raise PermissionDenied(
            f"dataset {use.dataset!r} requires differential privacy: train with DP on"
        )


def _collect(use: Use, config: NodeConfig) -> str:
    task = config.collect_task(use.dataset)
    if task is None:
        raise NotFound(f"unknown collection task {use.dataset!r}")
    purposes = task.collector_purposes(use.requester.name)
    if purposes is None:
        raise PermissionDenied(f"requester {use.requester.name!r} may not collect {use.dataset!r}")
    if use.header.purpose not in purposes:
        raise PermissionDenied(f"purpose {use.header.purpose!r} is not allowed for {use.dataset!r}")
    return "task allows collection"
