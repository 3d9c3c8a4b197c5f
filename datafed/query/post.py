"""Post-processing of a released result at the client: SELECT list, HAVING, ORDER BY, LIMIT.

The nodes compute one row per group (:class:`~datafed.query.spec.QuerySpec`); everything
SQL does after grouping runs here, on the combined result the analyst already holds.
Post-processing a release cannot reveal more than the release (the post-processing
property of differential privacy; for exact data it is arithmetic on what was received),
so none of it reaches a node.  Aggregates that only HAVING or ORDER BY use are computed by
the nodes like any other (the policy must allow them) and left out of the output.

Semantics are SQLite's: comparisons with NULL are unknown and a HAVING that is not true
drops the row (three-valued logic); numbers sort before text; NULLs sort first in
ascending order unless ``NULLS LAST`` says otherwise.  One exception: a *suppressed* group
(its values withheld, ``docs/analyst.md``) stays in the result whatever HAVING says, so
that suppression is never silent.  LIMIT and OFFSET count what they leave out
(:attr:`Plan.cut`); suppressed and remainder rows are ordered and cut like any row.

Literals take the type of what HAVING compares them with, as WHERE's do at the nodes and
as SQLite's affinity does (:meth:`PostProcess.bind`): ``year = '2023'`` compares the
integer 2023 with an integer GROUP BY column; an aggregate has no affinity in SQLite, so
text compared with one is refused rather than sorted after every number; what WHERE
refuses (a number against a text column, a boolean against a number) HAVING refuses.
A GROUP BY column's type is the dataset's, known once the nodes described the dataset:
:meth:`PostProcess.bind` checks and converts the literals then, before the query is
sent, and :meth:`PostProcess.plan` refuses to run a HAVING that needed it unbound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, Union

from datafed.errors import QueryError
from datafed.query.literals import TYPES, Value, coerce

__all__ = [
    "And",
    "Between",
    "Cmp",
    "Column",
    "Cond",
    "InSet",
    "IsNull",
    "Not",
    "Or",
    "OrderKey",
    "Output",
    "Plan",
    "PostProcess",
    "Source",
    "Value",
    "check_aliases",
]

Op = Literal["=", "!=", "<", "<=", ">", ">="]
#: Three-valued truth: True, False or None (unknown).
Truth = bool | None


@dataclass(frozen=True)
class Output:
    """One output column: its name (alias or label) and the base column it shows."""

    name: str
    source: str


@dataclass(frozen=True)
class OrderKey:
    """One ORDER BY term on a base column."""

    source: str
    desc: bool = False
    nulls_first: bool = True


@dataclass(frozen=True)
class Cmp:
    """``source op value``."""

    source: str
    op: Op
    value: Value


@dataclass(frozen=True)
class InSet:
    """``source [NOT] IN (values)``."""

    source: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    """``source BETWEEN low AND high``."""

    source: str
    low: Value
    high: Value


@dataclass(frozen=True)
class IsNull:
    """``source IS [NOT] NULL``."""

    source: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    """Conjunction (Kleene)."""

    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    """Disjunction (Kleene)."""

    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Not:
    """Negation (unknown stays unknown)."""

    item: Cond


Cond = Union[Cmp, InSet, Between, IsNull, And, Or, Not]  # noqa: UP007 - used at runtime


def _key(v: Value) -> tuple[int, Any]:
    """SQLite's order of values of different classes: numbers, then text."""
    if isinstance(v, str):
        return (1, v)
    return (0, v)


def _compare(a: Value, op: str, b: Value) -> Truth:
    if a is None or b is None:
        return None
    ka, kb = _key(a), _key(b)
    return {
        "=": ka == kb,
        "!=": ka != kb,
        "<": ka < kb,
        "<=": ka <= kb,
        ">": ka > kb,
        ">=": ka >= kb,
    }[op]


def _all(values: Sequence[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _any(values: Sequence[Truth]) -> Truth:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def evaluate(cond: Cond, get: Callable[[str], Value]) -> Truth:
    """Evaluate ``cond`` on one row (``get`` reads a base column); three-valued."""
    if isinstance(cond, Cmp):
        return _compare(get(cond.source), cond.op, cond.value)
    if isinstance(cond, InSet):
        found = _any([_compare(get(cond.source), "=", v) for v in cond.values])
        return (None if found is None else not found) if cond.negated else found
    if isinstance(cond, Between):
        v = get(cond.source)
        return _all([_compare(v, ">=", cond.low), _compare(v, "<=", cond.high)])
    if isinstance(cond, IsNull):
        return (get(cond.source) is None) != cond.negated
    if isinstance(cond, And):
        return _all([evaluate(i, get) for i in cond.items])
    if isinstance(cond, Or):
        return _any([evaluate(i, get) for i in cond.items])
    inner = evaluate(cond.item, get)
    return None if inner is None else not inner


class Column(Protocol):
    """A column of the dataset as a node describes it (``ColumnInfo``)."""

    @property
    def name(self) -> str:
        """The column's name."""

    @property
    def type(self) -> str:
        """``integer``, ``real``, ``text`` or ``boolean``."""


@dataclass(frozen=True)
class Source:
    """A base column HAVING compares with a literal whose type the dataset decides.

    ``func`` is empty for a GROUP BY column ``column``; else the aggregate (``min`` or
    ``max``: the type of ``column``).
    """

    label: str
    column: str
    func: str = ""


@dataclass(frozen=True)
class Plan:
    """What post-processing returns of a result.

    ``rows``: the base rows to return, in order; ``columns``: the base columns, in
    order; ``cut``: how many rows HAVING kept that LIMIT and OFFSET left out.
    """

    rows: list[int]
    columns: list[int]
    cut: int


@dataclass(frozen=True)
class PostProcess:
    """What the client does to the combined rows (see module docs).

    Attributes
    ----------
    outputs
        The output columns in SELECT order, each naming a base column: a GROUP BY column
        or an aggregate label (``sum(x)``, ``histogram(x)[0,5)``).
    having
        Rows to keep; ``None`` keeps all.
    order
        Sort keys, most significant first.
    limit, offset
        Rows to return after ``offset`` skipped; ``limit`` ``None`` returns the rest.
    typed
        Base columns HAVING compares with literals of the dataset's types (:meth:`bind`).
    aliases
        Names HAVING read as SELECT aliases: SQL reads a dataset column of the same name
        instead, so :meth:`bind` refuses a name the dataset has as a column.
    bound
        Whether :meth:`bind` checked the above against the dataset's columns.
    """

    outputs: tuple[Output, ...]
    having: Cond | None = None
    order: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int = 0
    typed: tuple[Source, ...] = ()
    aliases: tuple[str, ...] = ()
    bound: bool = False

    @classmethod
    def identity(cls, columns: Sequence[str]) -> PostProcess:
        """Every base column under its own name, nothing else."""
        return cls(tuple(Output(c, c) for c in columns))

    def bind(self, described: Mapping[str, Iterable[Column]]) -> PostProcess:
        """Check HAVING against the dataset's columns and give its literals their types.

        ``described``: per node, the dataset's columns with their types, as the node
        describes them (:class:`~datafed.client.nodeinfo.ColumnInfo`).

        Raises
        ------
        QueryError
            If HAVING reads as an alias a name the dataset has as a column, or compares
            a column with a literal of another type (module docs).
        """
        schemas = {node: {c.name: c.type for c in cols} for node, cols in described.items()}
        check_aliases(self.aliases, (c for schema in schemas.values() for c in schema))
        types = {s.label: _type(s, schemas) for s in self.typed}
        having = self.having
        if having is not None:
            having = _map_values(having, lambda src, v: _bound(self.typed, types, src, v))
        return replace(self, having=having, bound=True)

    def plan(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Value]],
        suppressed: Sequence[bool],
    ) -> Plan:
        """Which base rows to return, in order, and which base columns, in order.

        ``rows`` are the exact base rows; ``suppressed`` flags rows whose values were
        withheld (kept whatever HAVING says).

        Raises
        ------
        QueryError
            If HAVING needs the dataset's column types and :meth:`bind` was not called.
        """
        if (self.typed or self.aliases) and not self.bound:
            raise QueryError(
                "HAVING compares GROUP BY columns or reads aliases: bind the post-processing "
                "to the dataset's columns first (PostProcess.bind)"
            )
        where = {c: i for i, c in reversed(list(enumerate(columns)))}
        picked = list(range(len(rows)))
        if self.having is not None:
            cond = self.having

            def keep(r: int) -> bool:
                row = rows[r]
                return suppressed[r] or evaluate(cond, lambda c: row[where[c]]) is True

            picked = [r for r in picked if keep(r)]
        for key in reversed(self.order):  # stable sorts, least significant key first
            col = where[key.source]
            nulls = [r for r in picked if rows[r][col] is None]
            known = sorted(
                (r for r in picked if rows[r][col] is not None),
                key=lambda r: _key(rows[r][col]),
                reverse=key.desc,
            )
            picked = nulls + known if key.nulls_first else known + nulls
        end = None if self.limit is None else self.offset + self.limit
        window = picked[self.offset : end]
        return Plan(window, [where[o.source] for o in self.outputs], len(picked) - len(window))


def check_aliases(aliases: Iterable[str], columns: Iterable[str]) -> None:
    """Refuse a name HAVING read as a SELECT alias that is also one of ``columns``.

    SQL resolves a name in HAVING (and WHERE) to a column of the dataset before an alias
    (SQLite, ignoring case); outside GROUP BY that column has no single value per group.
    """
    names = {c.lower() for c in columns}
    for alias in aliases:
        if alias.lower() in names:
            raise QueryError(
                f"HAVING names {alias!r}, a SELECT alias and a column of the dataset: SQL "
                "reads the column (its value in one arbitrary row of each group), not "
                "the alias; rename the alias or write the aggregate itself"
            )


def _type(source: Source, schemas: Mapping[str, Mapping[str, str]]) -> str:
    """The dataset's type of ``source.column``, the same at every node that describes it."""
    col = source.column
    found = {
        node: schema.get(
            col, next((t for c, t in schema.items() if c.lower() == col.lower()), None)
        )
        for node, schema in schemas.items()
    }
    said = {n: t for n, t in found.items() if t is not None}
    if not said:
        raise QueryError(f"HAVING compares column {col!r}, which no node describes")
    untyped = sorted(n for n, t in said.items() if t not in TYPES)
    if untyped:
        raise QueryError(
            f"HAVING compares column {col!r}, whose type node {untyped[0]} does not report"
        )
    types = set(said.values())
    if len(types) > 1:
        each = ", ".join(f"{n}: {t}" for n, t in sorted(said.items()))
        raise QueryError(f"HAVING compares column {col!r}, whose type the nodes differ on ({each})")
    return types.pop()


def _bound(typed: Sequence[Source], types: Mapping[str, str], source: str, value: Value) -> Value:
    for s in typed:
        if s.label == source:
            what = f"column {s.column!r}" if not s.func else f"{s.func.upper()}({s.column})"
            return coerce(types[source], value, what, from_text=not s.func)
    return value


def _map_values(cond: Cond, f: Callable[[str, Value], Value]) -> Cond:
    """``cond`` with every literal ``v`` compared with base column ``c`` as ``f(c, v)``."""
    if isinstance(cond, Cmp):
        return Cmp(cond.source, cond.op, f(cond.source, cond.value))
    if isinstance(cond, InSet):
        return InSet(cond.source, tuple(f(cond.source, v) for v in cond.values), cond.negated)
    if isinstance(cond, Between):
        return Between(cond.source, f(cond.source, cond.low), f(cond.source, cond.high))
    if isinstance(cond, (And, Or)):
        return type(cond)(tuple(_map_values(i, f) for i in cond.items))
    if isinstance(cond, Not):
        return Not(_map_values(cond.item, f))
    return cond
