"""Before a training job starts Flower: check it against every node's published policy.

A node decides at the open step (its ClientApp presents the analyst's signed request), but
that step comes only after a Flower run is created and every SuperNode has connected,
which takes many seconds. Each node already publishes what the analyst may do with each
dataset (``NodeInfo``: the same answer ``datafed nodes`` shows). :func:`check_training`
applies the rules that answer settles -- the dataset exists, the analyst is an allowed
requester, the dataset allows training and the purpose, the columns exist, are allowed
and numeric, DP is on where the dataset requires it and the budget left covers the job --
and refuses the job before anything else runs, naming each node and its reason with the
status code the node itself would give.

Nothing is recorded: no use was asked for (``NodeInfo`` is metadata and policy only).
What the published answer does not settle (the model's ``allowed_models``, the signature,
the node's own state) the node still checks, and records, at the open step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from datafed.client.config import FederationConfig
from datafed.client.nodeinfo import DatasetInfo, NodeStatus
from datafed.errors import NodeUnavailable
from datafed.fl.errors import TrainingRefused
from datafed.fl.spec import TrainingSpec

__all__ = ["NUMERIC_TYPES", "check_training", "refusal"]

#: Column types a model can train on (``boolean`` counts as 0/1).
NUMERIC_TYPES = frozenset({"integer", "real", "boolean"})


def refusal(d: DatasetInfo | None, spec: TrainingSpec, purpose: str, served: Sequence[str]) -> str:
    """The refusal that one node's published policy gives the job (``""``: none).

    Parameters
    ----------
    d : DatasetInfo, optional
        What the node published about ``spec.dataset`` (``None``: it serves no such dataset).
    spec : TrainingSpec
        The job.
    purpose : str
        The declared purpose.
    served : Sequence[str]
        The datasets the node serves (named in the refusal of an unknown one).
    """
    if d is None:
        return (
            f"NOT_FOUND: no dataset {spec.dataset!r} at this node "
            f"(it serves: {', '.join(served) or 'none'})"
        )
    a = d.access
    if not a.allowed:
        return f"PERMISSION_DENIED: you are not an allowed requester of {spec.dataset!r}"
    if "training" not in a.operations:
        return f"PERMISSION_DENIED: dataset {spec.dataset!r} does not allow federated training"
    if purpose not in a.purposes:
        return (
            f"PERMISSION_DENIED: purpose {purpose!r} is not allowed for {spec.dataset!r} "
            f"(allowed: {', '.join(a.purposes) or 'none'})"
        )
    types = {c.name: c.type for c in d.columns}
    for col in spec.columns:
        if col not in types:
            return f"INVALID_ARGUMENT: unknown column {col!r} in dataset {spec.dataset!r}"
        if a.columns and col not in a.columns:
            return f"PERMISSION_DENIED: column {col!r} of {spec.dataset!r} is not allowed"
        if types[col] and types[col] not in NUMERIC_TYPES:
            return (
                f"INVALID_ARGUMENT: column {col!r} of {spec.dataset!r} is {types[col]}, "
                "not a number: a model trains on numeric columns only"
            )
    if a.dp and not spec.dp.enabled:
        return (
            f"PERMISSION_DENIED: dataset {spec.dataset!r} requires differential privacy: "
            "train with DP on (--dp-epsilon)"
        )
    if a.dp and spec.dp.enabled:
        cost = spec.epsilon_total
        if cost > a.budget_left + 1e-12:
            return (
                f"RESOURCE_EXHAUSTED: the job spends up to epsilon {cost:g} ({spec.rounds} "
                f"rounds x {spec.dp.epsilon_per_round:g}); {a.budget_left:g} of "
                f"{a.budget_epsilon:g} is left (budget per {a.budget_scope})"
            )
    return ""


def check_training(
    fed: FederationConfig,
    spec: TrainingSpec,
    purpose: str,
    nodes: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> None:
    """Refuse a job that a node's published policy refuses, before any Flower run.

    Raises
    ------
    TrainingRefused
        ``before_run``: each refusing node with its status code and reason.
    NodeUnavailable
        If a node of the job does not answer.
    """
    from datafed.client import Federation

    wanted = set(nodes) if nodes is not None else None
    statuses: list[NodeStatus] = [
        s for s in Federation(fed).discover() if wanted is None or s.node in wanted
    ]
    down = [s for s in statuses if s.info is None]
    if down:
        raise NodeUnavailable(
            down[0].node, "UNAVAILABLE", f"cannot check the training job: {down[0].error}"
        )
    refusals = {}
    for s in statuses:
        assert s.info is not None
        why = refusal(s.info.described.get(spec.dataset), spec, purpose, sorted(s.info.described))
        if why:
            refusals[s.node] = why
    if refusals:
        raise TrainingRefused(refusals, before_run=True)
    progress(f"policies of {len(statuses)} node(s) allow the job; starting the Flower run")
