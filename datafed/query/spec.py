"""The query model: a validated, typed description of one aggregate query.

A :class:`QuerySpec` is what the SQL front end produces, what travels (via serde) to
nodes, and what a node compiles to SQLAlchemy Core.  It never contains SQL text.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AGGREGATE_FUNCS",
    "MAX_BINS",
    "Aggregate",
    "AllOf",
    "AnyOf",
    "Between",
    "Comparison",
    "InList",
    "Not",
    "Predicate",
    "QuerySpec",
    "Scalar",
    "check_identifier",
]

AGGREGATE_FUNCS = ("sum", "count", "avg", "var", "min", "max", "histogram")
MAX_BINS = 64
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
Scalar = Union[bool, int, float, str]  # noqa: UP007 - pydantic needs a runtime union
_MAX_LITERAL_LEN = 256
_MAX_IN_VALUES = 1000


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, underscore), else raise."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"invalid identifier {name!r}: use letters, digits and '_' (max 64)")
    return name


def _check_scalar(value: Scalar) -> Scalar:
    if isinstance(value, str) and len(value) > _MAX_LITERAL_LEN:
        raise ValueError(f"string literal longer than {_MAX_LITERAL_LEN} characters")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Aggregate(_Frozen):
    """One aggregate of the SELECT list; ``column`` is ``*`` only for ``count``."""

    func: Literal["sum", "count", "avg", "var", "min", "max", "histogram"]
    column: str
    #: HISTOGRAM only: increasing bin edges; bin i is [edge i, edge i+1), the last closed.
    bins: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _column_ok(self) -> Aggregate:
        if self.column == "*":
            if self.func != "count":
                raise ValueError(f"{self.func.upper()}(*) is not allowed; only COUNT(*)")
        else:
            check_identifier(self.column)
        if self.func == "histogram":
            edges = self.bins
            if not 2 <= len(edges) <= MAX_BINS + 1:
                raise ValueError(f"HISTOGRAM needs 2 to {MAX_BINS + 1} bin edges")
            if any(not math.isfinite(e) for e in edges) or any(
                a >= b for a, b in itertools.pairwise(edges)
            ):
                raise ValueError("HISTOGRAM bin edges must be finite and increasing")
        elif self.bins:
            raise ValueError(f"{self.func.upper()} takes no bin edges")
        return self

    @property
    def label(self) -> str:
        """Human-readable column label, e.g. ``sum(bursts)``."""
        return f"{self.func}({self.column})"

    @property
    def labels(self) -> tuple[str, ...]:
        """Output column labels: one, or one per histogram bin (``histogram(x)[0,5)``)."""
        if self.func != "histogram":
            return (self.label,)
        e = self.bins
        return tuple(
            f"histogram({self.column})[{e[i]:g},{e[i + 1]:g}{']' if i == len(e) - 2 else ')'}"
            for i in range(len(e) - 1)
        )


class Comparison(_Frozen):
    """``column op value``."""

    kind: Literal["cmp"] = "cmp"
    column: str
    op: Literal["=", "!=", "<", "<=", ">", ">="]
    value: Scalar

    _col = field_validator("column")(check_identifier)
    _val = field_validator("value")(_check_scalar)


class InList(_Frozen):
    """``column [NOT] IN (v1, v2, ...)``."""

    kind: Literal["in"] = "in"
    column: str
    values: tuple[Scalar, ...] = Field(min_length=1, max_length=_MAX_IN_VALUES)
    negated: bool = False

    _col = field_validator("column")(check_identifier)


class Between(_Frozen):
    """``column BETWEEN low AND high`` (inclusive)."""

    kind: Literal["between"] = "between"
    column: str
    low: Scalar
    high: Scalar

    _col = field_validator("column")(check_identifier)


class AllOf(_Frozen):
    """Conjunction of predicates."""

    kind: Literal["and"] = "and"
    items: tuple[Predicate, ...] = Field(min_length=1, max_length=64)


class AnyOf(_Frozen):
    """Disjunction of predicates."""

    kind: Literal["or"] = "or"
    items: tuple[Predicate, ...] = Field(min_length=1, max_length=64)


class Not(_Frozen):
    """Negation of a predicate."""

    kind: Literal["not"] = "not"
    item: Predicate


Predicate = Annotated[
    Union[Comparison, InList, Between, AllOf, AnyOf, Not],  # noqa: UP007
    Field(discriminator="kind"),
]


def _predicate_columns(p: Predicate) -> set[str]:
    if isinstance(p, (AllOf, AnyOf)):
        return set().union(*(_predicate_columns(i) for i in p.items))
    if isinstance(p, Not):
        return _predicate_columns(p.item)
    return {p.column}


class QuerySpec(_Frozen):
    """One aggregate query over one dataset.

    Attributes
    ----------
    dataset
        The dataset's name at every node.
    aggregates
        The aggregates to compute, in SELECT order.
    group_by
        Categorical columns to group by (their values become the group key).
    where
        Row filter, or ``None`` for all rows.
    """

    dataset: str
    aggregates: tuple[Aggregate, ...] = Field(min_length=1, max_length=32)
    group_by: tuple[str, ...] = Field(default=(), max_length=4)
    where: Predicate | None = None

    _ds = field_validator("dataset")(check_identifier)

    @field_validator("group_by")
    @classmethod
    def _groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_identifier(name)
        if len(set(v)) != len(v):
            raise ValueError("GROUP BY names a column twice")
        return v

    def columns(self) -> set[str]:
        """Every column the query reads: aggregated, grouped and filtered."""
        cols = {a.column for a in self.aggregates if a.column != "*"} | set(self.group_by)
        if self.where is not None:
            cols |= _predicate_columns(self.where)
        return cols


AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
QuerySpec.model_rebuild()
