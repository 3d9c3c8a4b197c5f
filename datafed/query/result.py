"""The analyst's view of a finished query: rows, flags, exact values, JSON and pandas.

Values in :attr:`QueryResult.rows` are Python numbers (``int`` counts, ``float`` sums and
averages, ``None`` for SQL's NULL).  :attr:`QueryResult.exact_rows` holds the same values
with every fixed-point value (SUM, MIN, MAX) as the exact :class:`~decimal.Decimal` the
encoding denotes (:func:`datafed.query.components.fixed_decimal`); :meth:`to_json`
writes those as JSON numbers with exactly their digits (``30810.07``, never
``30810.07000732422``).  The JSON schema is in ``docs/analyst.md``.

A row may carry marks -- :attr:`QueryResult.suppressed` (values withheld) and
:attr:`QueryResult.remainder` (the group of rows whose GROUP BY key is NULL or not
declared) -- and the result :attr:`QueryResult.cut_by_limit` (rows LIMIT and OFFSET left
out).  Every output shows them: :meth:`~QueryResult.to_dict` and
:meth:`~QueryResult.to_json` as keys, :meth:`~QueryResult.to_pandas` as boolean columns
``_suppressed`` and ``_remainder`` and ``attrs["cut_by_limit"]``, the ``datafed query``
table as a note column and lines under it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from audit import DataUseRecord
from datafed.query.post import PostProcess
from datafed.query.spec import Scalar

if TYPE_CHECKING:
    import pandas

__all__ = ["LedgerHeadInfo", "NodeReceipt", "QueryResult", "dumps_exact"]

Cell = Scalar | Decimal | None


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
        The output columns: SELECT's, in its order, under their aliases (a query given as
        a :class:`~datafed.query.spec.QuerySpec`: GROUP BY columns, then one label per
        aggregate).
    rows
        One tuple per group (a single row without GROUP BY); ``None`` is SQL's NULL.
    suppressed
        Per row: whether its values were withheld -- its row count over all the job's
        nodes is below the largest *k* of the nodes' policies (on a DP dataset its noisy
        count).  Its values are then all ``None``; it is never shown as 0 nor left out.
    remainder
        Per row: whether it is the remainder group, holding the rows whose GROUP BY key
        is NULL or not among the declared values (its key is all ``None``); empty: none.
    cut_by_limit
        How many rows HAVING kept that LIMIT and OFFSET left out (0: none); suppressed
        and remainder rows are ordered, cut and counted like any row.
    exact_rows
        :attr:`rows` with SUM, MIN and MAX as exact decimals (module docs).
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
    suppressed: tuple[bool, ...] = field(default=())
    exact_rows: tuple[tuple[Cell, ...], ...] = field(default=())
    remainder: tuple[bool, ...] = field(default=())
    cut_by_limit: int = 0

    def as_dicts(self) -> list[dict[str, Scalar | None]]:
        """Rows as dictionaries keyed by column label."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def flags(self) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """Per row: (suppressed, remainder), all-False where the result holds none."""
        none = (False,) * len(self.rows)
        return self.suppressed or none, self.remainder or none

    def postprocess(self, post: PostProcess) -> QueryResult:
        """Apply SELECT's aliases and order, HAVING, ORDER BY and LIMIT (client side).

        Raises
        ------
        QueryError
            If HAVING needed the dataset's column types and ``post`` is not bound
            (:meth:`PostProcess.bind <datafed.query.post.PostProcess.bind>`).
        """
        exact = self.exact_rows or self.rows
        suppressed, remainder = self.flags()
        plan = post.plan(self.columns, exact, suppressed)
        picked, cols = plan.rows, plan.columns
        sources = {o.name: o.source for o in post.outputs}
        return replace(
            self,
            columns=tuple(o.name for o in post.outputs),
            rows=tuple(tuple(self.rows[r][c] for c in cols) for r in picked),
            exact_rows=tuple(tuple(exact[r][c] for c in cols) for r in picked),
            suppressed=tuple(suppressed[r] for r in picked),
            remainder=tuple(remainder[r] for r in picked),
            cut_by_limit=self.cut_by_limit + plan.cut,
            noise_stddev={
                name: self.noise_stddev[src]
                for name, src in sources.items()
                if src in self.noise_stddev
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as the JSON object of ``datafed query --json`` (docs/analyst.md)."""
        suppressed, remainder = self.flags()
        return {
            "columns": list(self.columns),
            "rows": [list(r) for r in (self.exact_rows or self.rows)],
            "suppressed": list(suppressed),
            "remainder": list(remainder),
            "cut_by_limit": self.cut_by_limit,
            "protection": self.protection,
            "job_id": self.job_id,
            "statement": self.statement,
            "nodes": list(self.nodes),
            "error_bound": self.error_bound,
            "noise_stddev": dict(self.noise_stddev),
            "epsilon": dict(self.epsilon),
            "ledgers": [
                {
                    "node": h.node,
                    "size": h.size,
                    "root_hash": h.root_hash.hex(),
                    "entries": list(h.entry_indexes),
                }
                for h in self.ledgers
            ],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text, decimals with exactly their digits."""
        return dumps_exact(self.to_dict())

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a DataFrame, with the rows' marks and the result's facts.

        Columns get pandas' nullable types (NULL is ``<NA>``, counts stay integers), then
        two boolean columns: ``_suppressed`` and ``_remainder`` (one more ``_`` in front
        while an output column has the name; ``attrs["marks"]`` names them).
        ``df.attrs`` holds ``protection``, ``job_id``, ``cut_by_limit``, ``error_bound``
        (CKKS), ``noise_stddev`` and ``epsilon`` (DP).  Needs pandas: ``pip install
        'datafed[pandas]'``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ModuleNotFoundError(
                "QueryResult.to_pandas() needs pandas: pip install 'datafed[pandas]'"
            ) from None
        rows = [[float(v) if isinstance(v, Decimal) else v for v in r] for r in self.rows]
        df = pd.DataFrame(rows, columns=list(self.columns), dtype=object).convert_dtypes()
        marks = {}
        for mark, flags in zip(("suppressed", "remainder"), self.flags(), strict=True):
            name = f"_{mark}"
            while name in self.columns:
                name = f"_{name}"
            df[name] = pd.array(flags, dtype="boolean")
            marks[mark] = name
        df.attrs.update(
            protection=self.protection,
            job_id=self.job_id,
            cut_by_limit=self.cut_by_limit,
            marks=marks,
            error_bound=self.error_bound,
            noise_stddev=dict(self.noise_stddev),
            epsilon=dict(self.epsilon),
        )
        return df


def dumps_exact(value: Any) -> str:
    """JSON text in which every :class:`~decimal.Decimal` is a number with its own digits.

    ``json`` writes floats by ``repr`` and refuses decimals; a decimal here is written as
    its plain notation (no exponent), so a reader with ``parse_float=Decimal`` gets it
    back exactly and any other reader gets the nearest double.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        text = format(value, "f")
        return text if text not in ("-0", "0") else "0"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write {value} as JSON")
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}: {dumps_exact(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return "[" + ", ".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value)
