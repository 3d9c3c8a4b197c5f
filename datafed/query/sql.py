"""SQL front end: a safe subset of SELECT, parsed with sqlglot into a :class:`QuerySpec`.

Accepted (``docs/analyst.md`` has examples)::

    SELECT <group columns>, SUM(x), COUNT(*), COUNT(x), AVG(x), VAR(x) | VARIANCE(x) |
           VAR_SAMP(x), MIN(x), MAX(x), HISTOGRAM(x, edge0, edge1, ...)   [AS alias]
    FROM <dataset>
    [WHERE <col op literal | col [NOT] IN (...) | col BETWEEN a AND b, joined by AND / OR / NOT>]
    [GROUP BY <columns>]
    [HAVING <aggregate, group column or alias op literal, ... joined by AND / OR / NOT>]
    [ORDER BY <output column, alias, position or aggregate> [ASC | DESC] [NULLS FIRST | LAST]]
    [LIMIT n [OFFSET m]]

:func:`parse_query` returns the :class:`QuerySpec` the nodes compute and the
:class:`~datafed.query.post.PostProcess` the client applies to the released result
(aliases, HAVING, ORDER BY, LIMIT).  Everything else (joins, subqueries, DISTINCT, CASE,
window functions, functions in filters, several statements, ...) is refused with a
:class:`~datafed.errors.QueryError` that names the construct in SQL's words and lists
what the subset supports.  The SQL text itself never reaches a database: nodes compile
the spec to SQLAlchemy Core.

Sizes are bounded with messages that say which bound (``docs/policy.md#limits``): at most
:data:`MAX_SQL_LENGTH` characters, :data:`MAX_AGGREGATES` aggregates, 64 bins per
HISTOGRAM, :data:`MAX_OUTPUT_VALUES` values per group, 1000 values per IN list, and a
WHERE of at most :data:`~datafed.wire.serde.MAX_PREDICATE_NODES` conditions,
:data:`~datafed.wire.serde.MAX_WHERE_VALUES` values and
:data:`~datafed.wire.serde.MAX_PREDICATE_DEPTH` levels (chains of AND or OR are one level) --
the defaults a node accepts, so a query the front end takes is not refused for its size.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from pydantic import ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datafed.errors import QueryError
from datafed.query.components import reported_components
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
    QuerySpec,
    Scalar,
)

# serde imports the spec (and so this package): read its bounds when a query is parsed.
from datafed.wire import serde as _wire

__all__ = [
    "MAX_AGGREGATES",
    "MAX_OUTPUT_VALUES",
    "MAX_SQL_LENGTH",
    "SUBSET",
    "ParsedQuery",
    "parse_query",
    "parse_sql",
]

MAX_SQL_LENGTH = 10_000
#: Aggregates in one SELECT (the spec's bound).
MAX_AGGREGATES = 32
#: Values per group (aggregates' components and the suppression indicator; each HISTOGRAM
#: bin counts one): a node's default ``limits.max_components`` (SQLite returns at most
#: 2000 columns).
MAX_OUTPUT_VALUES = 512
#: Values in one IN list, and conditions joined by one AND or OR (the spec's bounds).
_MAX_IN_VALUES = 1000
_MAX_ITEMS = 64
#: What the subset supports, in every refusal.
SUBSET = (
    "datafed supports SELECT [group columns,] SUM, COUNT, AVG, VAR, MIN, MAX or HISTOGRAM "
    "of one column [AS alias] FROM one dataset [WHERE column op literal, IN, BETWEEN, "
    "AND/OR/NOT] [GROUP BY columns] [HAVING ...] [ORDER BY ...] [LIMIT n [OFFSET m]]"
)
_ALLOWED_SELECT_ARGS = {
    "expressions",
    "from_",
    "from",
    "where",
    "group",
    "kind",
    "having",
    "order",
    "limit",
    "offset",
}
#: sqlglot's names of clauses, in SQL's words (a refusal never shows parser internals).
_CLAUSES = {
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
_CMP_TYPES: dict[type[exp.Expression], str] = {
    exp.EQ: "=",
    exp.NEQ: "!=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def unsupported(what: str) -> QueryError:
    """A refusal that names ``what`` and lists what the subset supports."""
    return QueryError(f"{what} is not supported; {SUBSET}")


def parse_sql(sql: str) -> QuerySpec:
    """Parse one aggregate query into the :class:`QuerySpec` the nodes compute.

    Aliases, HAVING, ORDER BY and LIMIT are applied by the client
    (:func:`parse_query`); this returns only the spec.

    Raises
    ------
    QueryError
        If the text is not a single SELECT in the supported subset.
    """
    return parse_query(sql).spec


def parse_query(sql: str) -> ParsedQuery:
    """Parse one query into its spec and its client-side post-processing.

    Raises
    ------
    QueryError
        If the text is not a single SELECT in the supported subset.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("empty query")
    if len(sql) > MAX_SQL_LENGTH:
        raise QueryError(f"query longer than {MAX_SQL_LENGTH} characters")
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except SqlglotError as exc:
        raise QueryError(f"cannot parse SQL: {_first_line(exc)}") from exc
    except RecursionError:  # sqlglot descends once per parenthesis or NOT
        raise QueryError("the query is nested too deeply") from None
    if len(trees) != 1:
        raise QueryError(f"expected exactly one statement, got {len(trees)}")
    tree = trees[0]
    if not isinstance(tree, exp.Select):
        raise QueryError(f"only SELECT is supported, got {tree.key.upper()}")
    extra = sorted(k for k, v in tree.args.items() if v and k not in _ALLOWED_SELECT_ARGS)
    if extra:
        names = ", ".join(_CLAUSES.get(e, e.upper().replace("_", " ")) for e in extra)
        raise unsupported(names)
    try:
        parsed = sql_clauses.Builder(tree).build()
    except ValidationError as exc:
        err = exc.errors()[0]
        raise QueryError(f"invalid query: {err['msg']}") from exc
    _check_size(parsed.spec)
    return parsed


def _check_size(spec: QuerySpec) -> None:
    """Refuse a spec larger than a node accepts by default (see module docs)."""
    values = len(reported_components(spec))
    if values > MAX_OUTPUT_VALUES:
        raise QueryError(
            f"the query asks for {values} values per group (each HISTOGRAM bin counts one); "
            f"at most {MAX_OUTPUT_VALUES}"
        )
    if spec.where is not None:
        most, most_values = _wire.MAX_PREDICATE_NODES, _wire.MAX_WHERE_VALUES
        nodes, literals = _wire.where_size(_wire.spec_to_proto(spec).where, most)
        if nodes > most:
            raise QueryError(f"the WHERE clause has more than {most} conditions")
        if literals > most_values:
            raise QueryError(f"the WHERE clause holds {literals} values; at most {most_values}")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _dataset(tree: exp.Select) -> str:
    src = tree.args.get("from_") or tree.args.get("from")
    if src is None:
        raise QueryError("the query has no FROM <dataset>")
    table = src.this
    if not isinstance(table, exp.Table) or table.args.get("db") or table.args.get("catalog"):
        raise QueryError("FROM must name exactly one dataset (no subqueries or schemas)")
    if table.args.get("joins") or tree.args.get("joins"):
        raise unsupported(_CLAUSES["joins"])
    return str(table.name)


def _column(node: exp.Expression, where: str) -> str:
    if not isinstance(node, exp.Column) or node.table:
        raise QueryError(f"{where} expects a plain column name, got {node.sql()!r}")
    return str(node.name)


def _aggregate(node: exp.Expression) -> Aggregate:
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
            v = _literal(a)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise QueryError("HISTOGRAM bin edges must be numbers")
            edges.append(float(v))
        return Aggregate(func="histogram", column=_column(args[0], "HISTOGRAM"), bins=tuple(edges))
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
    return Aggregate(func=func, column=_column(arg, func.upper()))  # type: ignore[arg-type]


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


def _predicate(node: exp.Expression, depth: int = 0) -> Predicate:
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
        preds = tuple(_predicate(i, depth + 1) for i in items)
        return AllOf(items=preds) if isinstance(node, exp.And) else AnyOf(items=preds)
    if isinstance(node, exp.Not):
        inner = node.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.In):
            return _in_list(inner, negated=True)
        return Not(item=_predicate(inner, depth + 1))
    if isinstance(node, exp.In):
        return _in_list(node, negated=False)
    if isinstance(node, exp.Between):
        return Between(
            column=_column(node.this, "BETWEEN"),
            low=_literal(node.args["low"]),
            high=_literal(node.args["high"]),
        )
    op = _CMP_TYPES.get(type(node))
    if op is not None:
        left, right = node.this, node.expression
        if op not in ("=", "!=") and isinstance(
            left if isinstance(right, exp.Column) else right, exp.Boolean
        ):
            raise QueryError(f"a boolean can only be compared with = or !=, not {op!r}")
        if isinstance(left, exp.Column):
            return Comparison(column=_column(left, "WHERE"), op=op, value=_literal(right))  # type: ignore[arg-type]
        if isinstance(right, exp.Column):
            return Comparison(column=_column(right, "WHERE"), op=_FLIP[op], value=_literal(left))  # type: ignore[arg-type]
        raise QueryError(f"a comparison needs a column on one side: {node.sql()!r}")
    raise QueryError(f"unsupported condition in WHERE: {node.sql()!r}")


def _in_list(node: exp.In, *, negated: bool) -> InList:
    if node.args.get("query") is not None:
        raise QueryError("subqueries are not supported in IN")
    if len(node.expressions) > _MAX_IN_VALUES:
        raise QueryError(
            f"an IN list holds at most {_MAX_IN_VALUES} values, got {len(node.expressions)}"
        )
    values = tuple(_literal(v) for v in node.expressions)
    return InList(column=_column(node.this, "IN"), values=values, negated=negated)


def _literal(node: Any) -> Scalar:
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


from datafed.query import sql_clauses  # noqa: E402 - it uses this module's helpers
from datafed.query.sql_clauses import ParsedQuery  # noqa: E402
