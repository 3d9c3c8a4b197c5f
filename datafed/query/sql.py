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
(aliases, HAVING, ORDER BY, LIMIT).  Names and literals there are read as SQLite reads
them or refused (:mod:`datafed.query.sql_clauses`); literals HAVING compares with GROUP
BY columns take the columns' types once the nodes described the dataset
(:meth:`~datafed.query.post.PostProcess.bind`, before the query is sent).  Everything
else (joins, subqueries, DISTINCT, CASE, window functions, functions in filters, several
statements, ...) is refused with a :class:`~datafed.errors.QueryError` that names the
construct in SQL's words and lists what the subset supports.  The SQL text itself never
reaches a database: nodes compile the spec to SQLAlchemy Core.

Sizes are bounded with messages that say which bound (``docs/policy.md#limits``): at most
:data:`MAX_SQL_LENGTH` characters, :data:`MAX_AGGREGATES` aggregates, 64 bins per
HISTOGRAM, :data:`MAX_OUTPUT_VALUES` values per group, 1000 values per IN list, and a
WHERE of at most :data:`~datafed.wire.serde.MAX_PREDICATE_NODES` conditions,
:data:`~datafed.wire.serde.MAX_WHERE_VALUES` values and
:data:`~datafed.wire.serde.MAX_PREDICATE_DEPTH` levels (chains of AND or OR are one level) --
the defaults a node accepts, so a query the front end takes is not refused for its size.
"""

from __future__ import annotations

import sqlglot
from pydantic import ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from datafed.errors import QueryError
from datafed.query.components import components
from datafed.query.spec import QuerySpec
from datafed.query.sql_clauses import Builder, ParsedQuery
from datafed.query.sql_terms import CLAUSES, MAX_AGGREGATES, SUBSET, unsupported

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
#: Values per group (aggregates' components and their non-null counts; each HISTOGRAM
#: bin counts one): a node's default ``limits.max_components`` (SQLite returns at most
#: 2000 columns).
MAX_OUTPUT_VALUES = 512
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
        names = ", ".join(CLAUSES.get(e, e.upper().replace("_", " ")) for e in extra)
        raise unsupported(names)
    try:
        parsed = Builder(tree).build()
    except ValidationError as exc:
        err = exc.errors()[0]
        raise QueryError(f"invalid query: {err['msg']}") from exc
    _check_size(parsed.spec)
    return parsed


def _check_size(spec: QuerySpec) -> None:
    """Refuse a spec larger than a node accepts by default (see module docs)."""
    values = len(components(spec))
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
