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
that suppression is never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Union

__all__ = [
    "And",
    "Between",
    "Cmp",
    "Cond",
    "InSet",
    "IsNull",
    "Not",
    "Or",
    "OrderKey",
    "Output",
    "PostProcess",
]

Op = Literal["=", "!=", "<", "<=", ">", ">="]
Value = Union[bool, int, float, str, Decimal, None]  # noqa: UP007 - used at runtime
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
    """

    outputs: tuple[Output, ...]
    having: Cond | None = None
    order: tuple[OrderKey, ...] = ()
    limit: int | None = None
    offset: int = 0

    @classmethod
    def identity(cls, columns: Sequence[str]) -> PostProcess:
        """Every base column under its own name, nothing else."""
        return cls(tuple(Output(c, c) for c in columns))

    def plan(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Value]],
        suppressed: Sequence[bool],
    ) -> tuple[list[int], list[int]]:
        """Which base rows to return, in order, and which base columns, in order.

        ``rows`` are the exact base rows; ``suppressed`` flags rows whose values were
        withheld (kept whatever HAVING says).
        """
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
        return picked[self.offset : end], [where[o.source] for o in self.outputs]
