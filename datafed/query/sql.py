"""SQL front end: a safe subset of SELECT, parsed with sqlglot into a :class:`QuerySpec`.

Accepted::

    SELECT <group columns>, SUM(x), COUNT(*), COUNT(x), AVG(x), VAR(x) | VARIANCE(x), MIN(x),
           MAX(x), HISTOGRAM(x, edge0, edge1, ...)
    FROM <dataset>
    [WHERE <col op literal | col [NOT] IN (...) | col BETWEEN a AND b, joined by AND / OR / NOT>]
    [GROUP BY <columns>]

Everything else (joins, subqueries, functions in filters, HAVING, ORDER BY, LIMIT, several
statements, ...) is refused with a :class:`~datafed.errors.QueryError` naming the construct.
The SQL text itself never reaches a database: nodes compile the spec to SQLAlchemy Core.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from pydantic import ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datafed.errors import QueryError
from datafed.query.spec import (
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

__all__ = ["MAX_SQL_LENGTH", "parse_sql"]

MAX_SQL_LENGTH = 10_000
_ALLOWED_SELECT_ARGS = {"expressions", "from_", "from", "where", "group", "kind"}
_AGG_TYPES: dict[type[exp.Expression], str] = {
    exp.Sum: "sum",
    exp.Count: "count",
    exp.Avg: "avg",
    exp.Variance: "var",
    exp.VariancePop: "var",
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


def parse_sql(sql: str) -> QuerySpec:
    """Parse one aggregate query into a :class:`QuerySpec`.

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
        raise QueryError(f"unsupported clause(s): {', '.join(e.upper() for e in extra)}")
    try:
        return _build(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise QueryError(f"invalid query: {err['msg']}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _build(tree: exp.Select) -> QuerySpec:
    dataset = _dataset(tree)
    group_by = tuple(
        _column(e, "GROUP BY") for e in (tree.args.get("group") or exp.Group()).expressions
    )
    aggregates: list[Aggregate] = []
    for item in tree.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column):
            name = _column(node, "SELECT")
            if name not in group_by:
                raise QueryError(f"column {name!r} in SELECT must be aggregated or in GROUP BY")
            continue
        aggregates.append(_aggregate(node))
    if not aggregates:
        raise QueryError("the query selects no aggregate (SUM, COUNT, AVG, VAR, MIN, MAX)")
    where = tree.args.get("where")
    predicate = _predicate(where.this) if where is not None else None
    return QuerySpec(
        dataset=dataset, aggregates=tuple(aggregates), group_by=group_by, where=predicate
    )


def _dataset(tree: exp.Select) -> str:
    src = tree.args.get("from_") or tree.args.get("from")
    if src is None:
        raise QueryError("the query has no FROM <dataset>")
    table = src.this
    if not isinstance(table, exp.Table) or table.args.get("db") or table.args.get("catalog"):
        raise QueryError("FROM must name exactly one dataset (no subqueries or schemas)")
    if table.args.get("joins") or tree.args.get("joins"):
        raise QueryError("joins are not supported; use intersection-sum for cross-agency joins")
    return str(table.name)


def _column(node: exp.Expression, where: str) -> str:
    if not isinstance(node, exp.Column) or node.table:
        raise QueryError(f"{where} expects a plain column name, got {node.sql()!r}")
    return str(node.name)


def _aggregate(node: exp.Expression) -> Aggregate:
    func = _AGG_TYPES.get(type(node))
    if func is None and isinstance(node, exp.Anonymous) and str(node.name).upper() == "HISTOGRAM":
        args = list(node.expressions)
        if len(args) < 3:
            raise QueryError("HISTOGRAM(column, edge0, edge1, ...) needs a column and 2+ edges")
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
        raise QueryError(f"unsupported expression in SELECT: {node.sql()!r}")
    if isinstance(node, exp.Count) and node.args.get("distinct"):
        raise QueryError("COUNT(DISTINCT ...) is not supported")
    if isinstance(arg, exp.Distinct):
        raise QueryError(f"{func.upper()}(DISTINCT ...) is not supported")
    if isinstance(arg, exp.Star):
        return Aggregate(func=func, column="*")  # type: ignore[arg-type]
    if arg is None:
        raise QueryError(f"{func.upper()} needs one column")
    return Aggregate(func=func, column=_column(arg, func.upper()))  # type: ignore[arg-type]


def _predicate(node: exp.Expression) -> Predicate:
    if isinstance(node, exp.Paren):
        return _predicate(node.this)
    if isinstance(node, exp.And):
        return AllOf(items=(_predicate(node.this), _predicate(node.expression)))
    if isinstance(node, exp.Or):
        return AnyOf(items=(_predicate(node.this), _predicate(node.expression)))
    if isinstance(node, exp.Not):
        inner = node.this
        if isinstance(inner, exp.In):
            return _in_list(inner, negated=True)
        return Not(item=_predicate(inner))
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
        if isinstance(left, exp.Column):
            return Comparison(column=_column(left, "WHERE"), op=op, value=_literal(right))  # type: ignore[arg-type]
        if isinstance(right, exp.Column):
            return Comparison(column=_column(right, "WHERE"), op=_FLIP[op], value=_literal(left))  # type: ignore[arg-type]
        raise QueryError(f"a comparison needs a column on one side: {node.sql()!r}")
    raise QueryError(f"unsupported condition in WHERE: {node.sql()!r}")


def _in_list(node: exp.In, *, negated: bool) -> InList:
    if node.args.get("query") is not None:
        raise QueryError("subqueries are not supported in IN")
    values = tuple(_literal(v) for v in node.expressions)
    return InList(column=_column(node.this, "IN"), values=values, negated=negated)


def _literal(node: Any) -> Scalar:
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _literal(node.this)
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
