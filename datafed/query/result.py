"""The analyst's view of a finished query."""

from __future__ import annotations

from dataclasses import dataclass, field

from audit import DataUseRecord
from datafed.query.spec import Scalar

__all__ = ["LedgerHeadInfo", "NodeReceipt", "QueryResult"]


@dataclass(frozen=True)
class LedgerHeadInfo:
    """A node's ledger state after it recorded the query."""

    node: str
    origin: str
    size: int
    root_hash: bytes
    entry_indexes: tuple[int, ...] = ()


@dataclass(frozen=True)
class NodeReceipt:
    """A node's verified receipt: its signed checkpoint and the records it proves."""

    node: str
    checkpoint: str
    records: tuple[DataUseRecord, ...]


@dataclass(frozen=True)
class QueryResult:
    """The combined result of one protected query.

    Attributes
    ----------
    columns
        Group-by columns followed by one label per aggregate.
    rows
        One tuple per group (a single row without GROUP BY).
    protection
        The protection mode used.
    job_id
        The job id recorded in every node's ledger.
    nodes
        The nodes that contributed.
    ledgers
        Each node's ledger head after it recorded the query.
    step_receipts
        Multi-step modes: one verified receipt per protocol step a node ran.
    error_bound
        Approximate modes (``ckks``): a bound on the absolute error of every SUM and
        COUNT in ``rows`` (AVG and VAR derive from them); ``None`` when exact.
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[Scalar | None, ...], ...]
    protection: str
    job_id: str
    nodes: tuple[str, ...]
    ledgers: tuple[LedgerHeadInfo, ...] = field(default=())
    #: Verified receipts, one per node (checked before the result was returned).
    receipts: tuple[NodeReceipt, ...] = field(default=())
    error_bound: float | None = None
    #: Differential privacy: epsilon each node charged to this requester's budget.
    epsilon: dict[str, float] = field(default_factory=dict)
    #: Differential privacy: stddev of the noise in each SUM and COUNT column.
    noise_stddev: dict[str, float] = field(default_factory=dict)
    step_receipts: tuple[NodeReceipt, ...] = field(default=())
    #: Hex digest of the job statement every node admitted and recorded.
    statement: str = ""

    def as_dicts(self) -> list[dict[str, Scalar | None]]:
        """Rows as dictionaries keyed by column label."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]
