"""What a node says about itself: datasets, typed columns, what the caller may do, ledger.

:meth:`Federation.discover <datafed.client.Federation.discover>` and ``datafed nodes``
show it; every query asks it once (certificates, declared group values, sign-offs, and
the *k* of DP datasets).  It is policy and metadata only: the node never sends row
counts, and the DP budget it reports is the epsilon left in the budget the caller draws
on (its own, or the dataset's shared one) -- what a refusal would tell the caller anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datafed.proto.v1 import query_pb2
from datafed.query.result import LedgerHeadInfo
from datafed.query.spec import Scalar
from datafed.wire.fields import from_message
from datafed.wire.serde import literal_from_proto

__all__ = [
    "ColumnInfo",
    "DatasetAccess",
    "DatasetInfo",
    "NodeInfo",
    "NodeStatus",
    "ledger_head",
    "node_info_from_proto",
]


@dataclass(frozen=True)
class ColumnInfo:
    """One exposed column: name, type (``integer``, ``real``, ``text``, ``boolean``), meaning."""

    name: str
    type: str
    description: str = ""


@dataclass(frozen=True)
class DatasetAccess:
    """What the calling analyst may do with one dataset (from the node's policy).

    ``allowed`` is false when the caller is not an allowed requester; nothing else is
    then known.  ``columns`` empty: every column.  ``budget_left`` is the epsilon left
    in the budget the caller draws on (``budget_scope``: ``requester`` or ``dataset``).
    """

    allowed: bool = False
    purposes: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()
    protections: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    min_group_size: int = 0
    #: Exact data: the nodes every query names, exactly (empty under DP).
    consortium: tuple[str, ...] = ()
    min_participants: int = 0
    required_participants: tuple[str, ...] = ()
    dp: bool = False
    epsilon_per_query: float = 0.0
    budget_epsilon: float = 0.0
    budget_left: float = 0.0
    budget_scope: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``datafed nodes --json``)."""
        if not self.allowed:
            return {"allowed": False}
        out: dict[str, Any] = {
            "allowed": True,
            "purposes": list(self.purposes),
            "aggregates": list(self.aggregates),
            "protections": list(self.protections),
            "operations": list(self.operations),
            "columns": list(self.columns) or None,
            "min_group_size": self.min_group_size,
            "consortium": list(self.consortium),
            "min_participants": self.min_participants,
            "required_participants": list(self.required_participants),
            "dp": None,
        }
        if self.dp:
            out["dp"] = {
                "epsilon_per_query": self.epsilon_per_query,
                "budget_epsilon": self.budget_epsilon,
                "budget_left": self.budget_left,
                "budget_scope": self.budget_scope,
            }
        return out


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of a node: description, typed columns and the caller's access."""

    name: str
    description: str
    columns: tuple[ColumnInfo, ...]
    access: DatasetAccess
    group_domains: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)
    required_signoff: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``datafed nodes --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "columns": [
                {"name": c.name, "type": c.type, "description": c.description} for c in self.columns
            ],
            "group_domains": {k: list(v) for k, v in self.group_domains.items()},
            "required_signoff": list(self.required_signoff),
            "access": self.access.to_dict(),
        }


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself: its datasets and its ledger head."""

    node: str
    agency: str
    datasets: dict[str, tuple[str, ...]]
    ledger: LedgerHeadInfo
    group_domains: dict[str, dict[str, tuple[Scalar, ...]]]
    certificate_pem: bytes
    required_signoff: dict[str, tuple[str, ...]]
    #: Each dataset described: columns with types and descriptions, the caller's access.
    described: dict[str, DatasetInfo] = field(default_factory=dict)
    #: The caller as the node identified it from its certificate (``analyst:alice``).
    caller: str = ""


@dataclass(frozen=True)
class NodeStatus:
    """One node of the federation file: its answer, or why there is none."""

    node: str
    address: str
    info: NodeInfo | None
    error: str = ""

    @property
    def up(self) -> bool:
        """Whether the node answered."""
        return self.info is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``datafed nodes --json``)."""
        if self.info is None:
            return {"node": self.node, "address": self.address, "up": False, "error": self.error}
        i = self.info
        return {
            "node": self.node,
            "address": self.address,
            "up": True,
            "agency": i.agency,
            "caller": i.caller,
            "ledger": {"size": i.ledger.size, "root_hash": i.ledger.root_hash.hex()},
            "datasets": [d.to_dict() for d in i.described.values()],
        }


def ledger_head(node: str, msg: query_pb2.LedgerHead) -> LedgerHeadInfo:
    """Convert a node's ledger head."""
    return from_message(LedgerHeadInfo, msg, node=node)


def _access(msg: query_pb2.DatasetAccess) -> DatasetAccess:
    if not msg.allowed:
        return DatasetAccess()
    return from_message(DatasetAccess, msg)


def _domains(d: query_pb2.DatasetInfo) -> dict[str, tuple[Scalar, ...]]:
    return {
        g.column: tuple(v for v in map(literal_from_proto, g.values) if v is not None)
        for g in d.group_domains
    }


def node_info_from_proto(a: query_pb2.NodeInfoResponse) -> NodeInfo:
    """Convert a node's NodeInfo answer."""
    described = {
        d.name: DatasetInfo(
            name=d.name,
            description=d.description,
            columns=tuple(ColumnInfo(c.name, c.type, c.description) for c in d.column_info)
            or tuple(ColumnInfo(c, "") for c in d.columns),
            access=_access(d.access),
            group_domains=_domains(d),
            required_signoff=tuple(d.required_signoff),
        )
        for d in a.datasets
    }
    return NodeInfo(
        node=a.node,
        agency=a.agency,
        datasets={d.name: tuple(d.columns) for d in a.datasets},
        ledger=ledger_head(a.node, a.ledger),
        group_domains={d.name: _domains(d) for d in a.datasets},
        certificate_pem=bytes(a.certificate_pem),
        required_signoff={d.name: tuple(d.required_signoff) for d in a.datasets},
        described=described,
        caller=a.caller,
    )
