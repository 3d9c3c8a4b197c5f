"""The one interface every engine implements, and the checks they all share.

A node reads its data only through :class:`DatasetStore` (one object per dataset), in the
style of :class:`audit.store.LedgerStore`: the node's servicers see the same methods and
the same typed values whether the dataset lives in SQLite, DuckDB, PostgreSQL
(:mod:`nodes.stores.sql`) or Apache Spark (:mod:`nodes.stores.spark`).  Queries arrive
as a :class:`~datafed.query.spec.QuerySpec` and are compiled to expression objects
(SQLAlchemy Core, Spark ``Column``); no SQL text from a request reaches an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from datafed.query.components import Component, components
from datafed.query.spec import Comparison, InList, Predicate, QuerySpec
from nodes.errors import InvalidRequest
from nodes.stores.types import NUMERIC, count_literals, depth, literal, terms

__all__ = [
    "MAX_COMPONENTS",
    "MAX_LITERALS",
    "MAX_PREDICATE_DEPTH",
    "Column",
    "DatasetStore",
    "GroupRow",
    "check_spec",
]

#: Aggregate columns one query may compute (SQLite's default limit is 2000 result
#: columns; every engine gets the same, lower, limit so answers do not depend on it).
MAX_COMPONENTS = 512
#: Literal values one WHERE may hold (SQLite binds at most 32766 parameters, PostgreSQL
#: 65535); above this the node refuses the query with a clear message.
MAX_LITERALS = 10_000
#: Nesting depth of a WHERE (SQLite's expression depth limit is 1000).
MAX_PREDICATE_DEPTH = 64


@dataclass(frozen=True)
class GroupRow:
    """One group of a local aggregate: key, row count and fixed-point component values."""

    key: tuple[Any, ...]
    rows: int
    values: tuple[int, ...]


@dataclass(frozen=True)
class Column:
    """One exposed column: its name, its type and the database's own type name."""

    name: str
    type: str
    stored: str

    @property
    def cast(self) -> bool:
        """Whether the query must convert the stored values to :attr:`type`."""
        return self.stored != self.type


class DatasetStore(Protocol):
    """One dataset in one engine; every method blocks (servicers call it in a thread)."""

    @property
    def engine_name(self) -> str:
        """``sqlite``, ``duckdb``, ``postgresql``, ``spark`` (or another SQLAlchemy dialect)."""
        ...

    @property
    def columns(self) -> Mapping[str, Column]:
        """The exposed columns, in order."""
        ...

    def aggregate(
        self,
        spec: QuerySpec,
        comps: Sequence[Component],
        fixed_point_bits: int,
        bounds: Mapping[str, tuple[float, float]] | None,
    ) -> list[GroupRow]:
        """One :class:`GroupRow` per non-empty group, sorted by key (``spec`` is checked)."""
        ...

    def read_rows(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row's values of ``columns``, typed."""
        ...

    def nonconforming(self, columns: Sequence[str]) -> dict[str, tuple[int, Any]]:
        """Columns whose stored values do not fit their type: ``(count, an example)``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def check_spec(name: str, columns: Mapping[str, Column], spec: QuerySpec) -> None:
    """Refuse, before any engine runs it, a query this dataset cannot answer exactly.

    Unknown columns, a numeric aggregate over a text column, a literal that is not of its
    column's type and requests beyond the limits above are :class:`InvalidRequest` with a
    message for the analyst (never a database error surfacing as INTERNAL) -- all decided
    here, before admission, from the request alone.
    """
    unknown = sorted(spec.columns() - set(columns))
    if unknown:
        raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {name!r}")
    for agg in spec.aggregates:
        if agg.func != "count" and columns[agg.column].type not in NUMERIC:
            raise InvalidRequest(
                f"{agg.func.upper()}({agg.column}) needs a numeric column; "
                f"{agg.column!r} is {columns[agg.column].type}"
            )
    n = len(components(spec))
    if n > MAX_COMPONENTS:
        raise InvalidRequest(
            f"query needs up to {n} aggregate columns; this node computes at most "
            f"{MAX_COMPONENTS} per query"
        )
    lits = count_literals(spec.where)
    if lits > MAX_LITERALS:
        raise InvalidRequest(
            f"WHERE holds {lits} literal values; this node accepts at most {MAX_LITERALS}"
        )
    if depth(spec.where) > MAX_PREDICATE_DEPTH:
        raise InvalidRequest(f"WHERE is nested deeper than {MAX_PREDICATE_DEPTH} levels")
    check_literals(columns, spec.where)


def check_literals(columns: Mapping[str, Column], where: Predicate | None) -> None:
    """Each literal of ``where`` coerces to its column's type (:func:`literal`), or refuse."""
    for p in terms(where):
        values = (
            [p.value] if isinstance(p, Comparison)
            else list(p.values) if isinstance(p, InList)
            else [p.low, p.high]
        )  # fmt: skip
        for v in values:
            if v is not None:
                literal(columns[p.column].type, p.column, v)
