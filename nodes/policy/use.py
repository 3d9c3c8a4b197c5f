"""What the policy engine admits: one :class:`Use` of a dataset (or collection task).

Its own module so that the pure rules (:mod:`nodes.policy.rules`) and the engine
(:mod:`nodes.policy.engine`, which re-exports it) both build on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from datafed.pki.ca import Identity
from datafed.proto.v1 import query_pb2
from datafed.query.spec import QuerySpec
from datafed.wire.signing import RequestHeader
from datafed.wire.statement import SignedJobStatement

__all__ = ["Operation", "Use"]

Operation = Literal["query", "intersection_sum", "training", "collect"]


@dataclass(frozen=True)
class Use:
    """One requested use of a dataset, as the policy engine sees it.

    Attributes
    ----------
    operation
        ``query``, ``intersection_sum`` or ``training``.
    requester, header
        The authenticated caller and its signed request header.
    dataset, columns
        What is read.
    protection
        The protection mode (queries) or how the use is protected (recorded).
    spec, statement, signoffs
        Queries: the spec, the job statement and the approvals of other agencies.
    epsilon
        What the use spends under DP; ``None``: the dataset's ``epsilon_per_query``.
    delta
        The delta it spends at admission (Gaussian noise), checked against the policy's
        ``max_delta_per_job`` and the budget, recorded on its ``approved`` entry.
    dp_requested
        Training: whether the job trains with differential privacy.
    summed
        Intersection-sum: the columns whose values are summed (bounded under DP).
    model
        Training: the model factory the node's SuperNode would run.
    details
        Public details recorded with the approval (no data-dependent facts).
    """

    operation: Operation
    requester: Identity
    header: RequestHeader
    dataset: str
    columns: frozenset[str] = frozenset()
    protection: str = ""
    spec: QuerySpec | None = None
    statement: SignedJobStatement | None = None
    signoffs: Sequence[query_pb2.SignOff] = ()
    epsilon: float | None = None
    delta: float = 0.0
    dp_requested: bool = False
    summed: frozenset[str] = frozenset()
    model: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
