"""The terms of a SELECT in the SQL subset, read from sqlglot's tree.

The FROM dataset, plain columns, literals, aggregates and WHERE predicates, shared by the
front end (:mod:`datafed.query.sql`, which checks the statement as a whole) and the
clause builder (:mod:`datafed.query.sql_clauses`, SELECT list, HAVING, ORDER BY, LIMIT).
Every refusal is a :class:`~datafed.errors.QueryError` in SQL's words that lists what the
subset supports (:data:`SUBSET`).
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from datafed.errors import QueryError
from datafed.query.spec import (
    MAX_BINS,
    Aggregate,
    AllOf,
    AnyOf,
    Between,
    Comparison,
    InList,
    Not,
    Predicate,
    Scalar,
)

# serde imports the spec (and so this package): read its bounds when a query is parsed.
from datafed.wire import serde as _wire

__all__ = [
    "CLAUSES",
    "CMP_TYPES",
    "FLIP",
    "MAX_AGGREGATES",
    "SUBSET",
    "aggregate",
    "column",
    "dataset",
    "literal",
    "predicate",
    "unsupported",
]

#: Aggregates in one SELECT (the spec's bound).
MAX_AGGREGATES = 32
#: Values in one IN list, and conditions joined by one AND or OR (the spec's bounds).
_MAX_IN_VALUES = 1000
_MAX_ITEMS = 64
#: What the subset supports, in every refusal.
SUBSET = (
    "datafed supports SELECT [group columns,] SUM, COUNT, AVG, VAR, MIN, MAX or HISTOGRAM "
    "of one column [AS alias] FROM one dataset [WHERE column op literal, IN, BETWEEN, "
    "AND/OR/NOT] [GROUP BY columns] [HAVING ...] [ORDER BY ...] [LIMIT n [OFFSET m]]"
)
#: sqlglot's names of clauses, in SQL's words (a refusal never shows parser internals).
CLAUSES = {
    "joins": "JOIN (use intersection-sum for a cross-agency join)",
    "distinct": "SELECT DISTINCT",
    "with_": "WITH (common table expressions)",
    "with": "WITH (common table expressions)",
    "windows": "WINDOW",
    "qualify": "QUALIFY",
    "laterals": "LATERAL",
    "pivots": "PIVOT",
    "sample": "TABLESAMPLE",
    "locks": "FOR UPDATE",
    "into": "SELECT INTO",
    "hint": "optimizer hints",
    "exclude": "EXCLUDE",
    "operation_modifiers": "query modifiers",
    "connect": "CONNECT BY",
    "match": "MATCH_RECOGNIZE",
}
_AGG_TYPES: dict[type[exp.Expression], str] = {
    exp.Sum: "sum",
    exp.Count: "count",
    exp.Avg: "avg",
    exp.Variance: "var",
    exp.Min: "min",
    exp.Max: "max",
}
#: Comparisons, and (:data:`FLIP`) each one with its sides swapped (``1 < x`` is ``x > 1``).
CMP_TYPES: dict[type[exp.Expression], str] = {
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def unsupported(what: str) -> QueryError:
    """A refusal that names ``what`` and lists what the subset supports."""
    return QueryError(f"{what} is not supported; {SUBSET}")


def dataset(tree: exp.Select) -> str:
    """The one dataset FROM names (no joins, subqueries or schemas)."""
    src = tree.args.get("from_") or tree.args.get("from")
    if src is None:
        raise QueryError("the query has no FROM <dataset>")
    table = src.this
    if not isinstance(table, exp.Table) or table.args.get("db") or table.args.get("catalog"):
        raise QueryError("FROM must name exactly one dataset (no subqueries or schemas)")
    if table.args.get("joins") or tree.args.get("joins"):
        raise unsupported(CLAUSES["joins"])
    return str(table.name)


def column(node: exp.Expression, where: str) -> str:
    """The plain column ``node`` names; ``where`` is the clause, for the refusal."""
    if not isinstance(node, exp.Column) or node.table:
        raise QueryError(f"{where} expects a plain column name, got {node.sql()!r}")
    return str(node.name)


def aggregate(node: exp.Expression) -> Aggregate:
    """The aggregate a SELECT, HAVING or ORDER BY term computes (SUM, ..., HISTOGRAM)."""
    if isinstance(node, exp.Window):
        raise unsupported("a window function (OVER)")
    if isinstance(node, exp.Case) or (isinstance(node, exp.If)):
        raise unsupported("CASE (filter rows with WHERE, split them with GROUP BY)")
    if isinstance(node, exp.Count) and (
        node.args.get("distinct") or isinstance(node.this, exp.Distinct)
    ):
        raise unsupported("COUNT(DISTINCT ...) (distinct counts do not add up across nodes)")
    if isinstance(node, exp.VariancePop):
        raise unsupported("VAR_POP (VAR, VARIANCE and VAR_SAMP give the sample variance)")
    if isinstance(node, (exp.Stddev, exp.StddevPop, exp.StddevSamp)):
        raise unsupported("STDDEV (use VAR, the sample variance)")
    func = _AGG_TYPES.get(type(node))
    if func is None and isinstance(node, exp.Anonymous) and str(node.name).upper() == "HISTOGRAM":
        args = list(node.expressions)
        if len(args) < 3:
            raise QueryError("HISTOGRAM(column, edge0, edge1, ...) needs a column and 2+ edges")
        if len(args) - 2 > MAX_BINS:
            raise QueryError(
                f"HISTOGRAM takes at most {MAX_BINS} bins ({MAX_BINS + 1} edges), "
                f"got {len(args) - 2}"
            )
        edges = []
        for a in args[1:]:
            v = literal(a)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise QueryError("HISTOGRAM bin edges must be numbers")
            edges.append(float(v))
        return Aggregate(func="histogram", column=column(args[0], "HISTOGRAM"), bins=tuple(edges))
    if func is None and isinstance(node, exp.Anonymous) and str(node.name).upper() == "VAR":
        func, arg = "var", (node.expressions[0] if len(node.expressions) == 1 else None)
    else:
        arg = node.this if func is not None else None
    if func is None:
        raise QueryError(f"unsupported expression in SELECT: {node.sql()!r}; {SUBSET}")
    if isinstance(arg, exp.Distinct):
        raise unsupported(f"{func.upper()}(DISTINCT ...)")
    if isinstance(arg, (exp.Case, exp.If)):
        raise unsupported("CASE (filter rows with WHERE, split them with GROUP BY)")
    if isinstance(arg, exp.Star):
        return Aggregate(func=func, column="*")  # type: ignore[arg-type]
    if arg is None:
        raise QueryError(f"{func.upper()} needs one column")
    return Aggregate(func=func, column=column(arg, func.upper()))  # type: ignore[arg-type]


def _chain(node: exp.Expression, kind: type[exp.Expression]) -> list[exp.Expression]:
    """The operands of a chain ``a AND b AND (c AND d)`` (no recursion: chains are long)."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        while isinstance(n, exp.Paren):
            n = n.this
        if isinstance(n, kind):
            stack.extend((n.expression, n.this))
        else:
            out.append(n)
    return out


def predicate(node: exp.Expression, depth: int = 0) -> Predicate:
    """The WHERE condition ``node`` at nesting ``depth`` (chains of AND or OR are one level)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if depth > _wire.MAX_PREDICATE_DEPTH:
        raise QueryError(
            f"the WHERE clause is nested deeper than {_wire.MAX_PREDICATE_DEPTH} levels"
        )
    if isinstance(node, (exp.And, exp.Or)):
        items = _chain(node, type(node))
        if len(items) > _MAX_ITEMS:
            word = "AND" if isinstance(node, exp.And) else "OR"
            raise QueryError(
                f"at most {_MAX_ITEMS} conditions may be joined by {word} at one level, "
                f"got {len(items)}"
            )
        preds = tuple(predicate(i, depth + 1) for i in items)
        return AllOf(items=preds) if isinstance(node, exp.And) else AnyOf(items=preds)
    if isinstance(node, exp.Not):
        inner = node.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.In):
            return _in_list(inner, negated=True)
        return Not(item=predicate(inner, depth + 1))
    if isinstance(node, exp.In):
        return _in_list(node, negated=False)
    if isinstance(node, exp.Between):
        return Between(
            column=column(node.this, "BETWEEN"),
            low=literal(node.args["low"]),
            high=literal(node.args["high"]),
        )
    op = CMP_TYPES.get(type(node))
    if op is not None:
        left, right = node.this, node.expression
        if op not in ("=", "!=") and isinstance(
            left if isinstance(right, exp.Column) else right, exp.Boolean
        ):
            raise QueryError(f"a boolean can only be compared with = or !=, not {op!r}")
        if isinstance(left, exp.Column):
            return Comparison(column=column(left, "WHERE"), op=op, value=literal(right))  # type: ignore[arg-type]
        if isinstance(right, exp.Column):
            return Comparison(column=column(right, "WHERE"), op=FLIP[op], value=literal(left))  # type: ignore[arg-type]
        raise QueryError(f"a comparison needs a column on one side: {node.sql()!r}")
    raise QueryError(f"unsupported condition in WHERE: {node.sql()!r}")


def _in_list(node: exp.In, *, negated: bool) -> InList:
    if node.args.get("query") is not None:
        raise QueryError("subqueries are not supported in IN")
    if len(node.expressions) > _MAX_IN_VALUES:
        raise QueryError(
            f"an IN list holds at most {_MAX_IN_VALUES} values, got {len(node.expressions)}"
        )
    values = tuple(literal(v) for v in node.expressions)
    return InList(column=column(node.this, "IN"), values=values, negated=negated)


def literal(node: Any) -> Scalar:
    """The literal value ``node`` holds (an integer must fit in 64 bits)."""
    value = _value(node)
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < 1 << 63:
        # What the wire (int64) and the databases hold; larger is a clean refusal here.
        raise QueryError(f"integer {value} does not fit in 64 bits")
    return value


def _value(node: Any) -> Scalar:
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _value(node.this)
        assert isinstance(value, (int, float))
        return -value
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if not isinstance(node, exp.Literal):
        raise QueryError(f"expected a literal value, got {node.sql()!r}")
    if node.is_string:
        return str(node.this)
    text = str(node.this)
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError as exc:
            raise QueryError(f"bad number {text!r}") from exc
