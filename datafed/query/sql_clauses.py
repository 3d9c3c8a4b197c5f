"""The clauses of a SELECT in the SQL subset: SELECT list, HAVING, ORDER BY and LIMIT.

:class:`Builder` turns a parsed SELECT (checked by :func:`datafed.query.sql.parse_query`)
into the :class:`~datafed.query.spec.QuerySpec` the nodes compute and the
:class:`~datafed.query.post.PostProcess` the client applies to the released result.
HAVING and ORDER BY may name GROUP BY columns, SELECT aliases and aggregates; an aggregate
they name that SELECT does not is computed by the nodes too (so the policy sees it) and
left out of the output.

Names resolve as in SQLite, ignoring case: ORDER BY reads a SELECT alias before a column,
HAVING a GROUP BY column before an alias, and an alias HAVING reads must not be a column
of the dataset (SQL would read that column: :func:`datafed.query.post.check_aliases`,
here for the columns the query names, at :meth:`~datafed.query.post.PostProcess.bind`
for the dataset's).  GROUP BY reads an alias first in SQLite: a GROUP BY name that is
the alias of something else is refused.  Literals compared with an aggregate are checked
here; those compared with a GROUP BY column or MIN/MAX take the column's type at
:meth:`~datafed.query.post.PostProcess.bind` (:mod:`datafed.query.literals`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

import datafed.query.post as post
from datafed.errors import QueryError
from datafed.query.literals import coerce
from datafed.query.spec import Aggregate, QuerySpec
from datafed.query.sql_terms import (
    CMP_TYPES,
    FLIP,
    MAX_AGGREGATES,
    SUBSET,
    aggregate,
    column,
    dataset,
    literal,
    predicate,
    unsupported,
)

__all__ = ["Builder", "ParsedQuery"]


@dataclass(frozen=True)
class ParsedQuery:
    """A parsed query: what the nodes compute and what the client does to the result."""

    spec: QuerySpec
    post: post.PostProcess


class Builder:
    """Turns one checked SELECT tree into a spec and its post-processing."""

    def __init__(self, tree: exp.Select) -> None:
        self.tree = tree
        self.dataset = dataset(tree)
        self.group_by = tuple(
            column(e, "GROUP BY") for e in (tree.args.get("group") or exp.Group()).expressions
        )
        self.aggregates: dict[Aggregate, None] = {}
        self.outputs: list[post.Output] = []
        self.aliases: dict[str, str] = {}  # alias -> base column
        #: Every base column: a GROUP BY column, or an aggregate label with its aggregate.
        self.sources = {g: post.Source(g, g) for g in self.group_by}
        self.typed: dict[str, post.Source] = {}  # HAVING's literals typed at bind
        self.read_aliases: list[str] = []  # names HAVING read as aliases

    def build(self) -> ParsedQuery:
        """The spec and post-processing of the tree (QueryError if out of the subset)."""
        for item in self.tree.expressions:
            alias = str(item.alias) if isinstance(item, exp.Alias) else None
            node = item.this if isinstance(item, exp.Alias) else item
            outs = self._select(node, alias)
            self.outputs += outs
            if alias is not None and len(outs) == 1:
                self.aliases.setdefault(alias, outs[0].source)
        self._check_group_by()
        having = self.tree.args.get("having")
        cond = self._condition(having.this) if having is not None else None
        order = tuple(
            self._order(o) for o in (self.tree.args.get("order") or exp.Order()).expressions
        )
        if not self.aggregates:
            raise QueryError("the query selects no aggregate (SUM, COUNT, AVG, VAR, MIN, MAX)")
        if len(self.aggregates) > MAX_AGGREGATES:
            raise QueryError(
                f"a query has at most {MAX_AGGREGATES} aggregates, got {len(self.aggregates)}"
            )
        where = self.tree.args.get("where")
        named = [*self.group_by, *(a.column for a in self.aggregates)]
        post.check_aliases(self.read_aliases, [*named, *_columns(where)])
        spec = QuerySpec(
            dataset=self.dataset,
            aggregates=tuple(self.aggregates),
            group_by=self.group_by,
            where=predicate(where.this) if where is not None else None,
        )
        return ParsedQuery(
            spec,
            post.PostProcess(
                tuple(self.outputs),
                having=cond,
                order=order,
                limit=_count_clause(self.tree, "limit"),
                offset=_count_clause(self.tree, "offset") or 0,
                typed=tuple(self.typed.values()),
                aliases=tuple(dict.fromkeys(self.read_aliases)),
            ),
        )

    def _check_group_by(self) -> None:
        """Refuse a GROUP BY name SQLite would read as the alias of something else."""
        for g in self.group_by:
            source = _find(self.aliases, g)
            if source is not None and source.lower() != g.lower():
                raise QueryError(
                    f"GROUP BY {g} names a SELECT alias of {source}: SQL groups by what the "
                    "alias stands for, not the column; rename the alias"
                )

    def _select(self, node: exp.Expression, alias: str | None) -> list[post.Output]:
        if isinstance(node, exp.Column):
            name = column(node, "SELECT")
            if name not in self.group_by:
                raise QueryError(f"column {name!r} in SELECT must be aggregated or in GROUP BY")
            return [post.Output(alias or name, name)]
        agg = self._add(node)
        if agg.func == "histogram":
            prefix = len(f"histogram({agg.column})")
            return [post.Output(f"{alias}{lb[prefix:]}" if alias else lb, lb) for lb in agg.labels]
        return [post.Output(alias or agg.label, agg.label)]

    def _add(self, node: exp.Expression) -> Aggregate:
        agg = aggregate(node)
        self.aggregates.setdefault(agg, None)
        for label in agg.labels:
            self.sources.setdefault(label, post.Source(label, agg.column, agg.func))
        return agg

    def _ref(self, node: exp.Expression, clause: str) -> str:
        """The base column an expression of HAVING or ORDER BY names (module docs)."""
        if isinstance(node, exp.Column) and not node.table:
            name = str(node.name)
            alias = _find(self.aliases, name)
            group = next((g for g in self.group_by if g.lower() == name.lower()), None)
            if clause == "ORDER BY" and alias is not None:
                return alias
            if group is not None:
                return group
            if alias is not None:
                self.read_aliases.append(name)
                return alias
            raise QueryError(
                f"{clause} may name GROUP BY columns, aggregates and SELECT aliases; "
                f"{name!r} is none of them"
            )
        if isinstance(node, exp.Column):
            raise QueryError(f"{clause} expects a plain name, got {node.sql()!r}")
        agg = self._add(node)
        if agg.func == "histogram":
            raise unsupported(f"HISTOGRAM in {clause}")
        return agg.label

    def _values(self, label: str, op: str, values: tuple[post.Value, ...]) -> None:
        """Check HAVING's literals compared with base column ``label`` (module docs)."""
        source = self.sources[label]
        known = [v for v in values if v is not None]
        if op not in ("=", "!=", "IN") and any(isinstance(v, bool) for v in known):
            raise QueryError(f"a boolean can only be compared with = or !=, not {op!r}")
        what = "COUNT(*)" if source.column == "*" else f"{source.func.upper()}({source.column})"
        if source.func in ("", "min", "max"):  # the column's type decides, at bind
            if known:
                self.typed.setdefault(label, source)
            if source.func:  # an aggregate has no affinity: text is compared as text
                for v in known:
                    if isinstance(v, str):
                        coerce("real", v, what, from_text=False)
            return
        ctype = "integer" if source.func in ("count", "histogram") else "real"
        for v in known:
            coerce(ctype, v, what, from_text=False)

    def _order(self, node: exp.Expression) -> post.OrderKey:
        assert isinstance(node, exp.Ordered)
        term = node.this
        if isinstance(term, exp.Literal) and not term.is_string:
            pos = literal(term)
            if not isinstance(pos, int) or not 1 <= pos <= len(self.outputs):
                raise QueryError(f"ORDER BY {term.sql()} is not a position in the SELECT list")
            source = self.outputs[pos - 1].source
        else:
            source = self._ref(term, "ORDER BY")
        desc = bool(node.args.get("desc"))
        nulls_first = node.args.get("nulls_first")
        return post.OrderKey(
            source, desc, bool(nulls_first) if nulls_first is not None else not desc
        )

    def _condition(self, node: exp.Expression) -> post.Cond:
        if isinstance(node, exp.Paren):
            return self._condition(node.this)
        if isinstance(node, exp.And):
            return post.And((self._condition(node.this), self._condition(node.expression)))
        if isinstance(node, exp.Or):
            return post.Or((self._condition(node.this), self._condition(node.expression)))
        if isinstance(node, exp.Not):
            inner = node.this
            if isinstance(inner, exp.Is):
                return post.IsNull(self._ref(inner.this, "HAVING"), negated=True)
            if isinstance(inner, exp.In):
                return _negated(self._in(inner))
            return post.Not(self._condition(inner))
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            return post.IsNull(self._ref(node.this, "HAVING"))
        if isinstance(node, exp.In):
            return self._in(node)
        if isinstance(node, exp.Between):
            source = self._ref(node.this, "HAVING")
            low, high = _value(node.args["low"]), _value(node.args["high"])
            self._values(source, "BETWEEN", (low, high))
            return post.Between(source, low, high)
        op = CMP_TYPES.get(type(node))
        if op is not None:
            left, right = node.this, node.expression
            if _is_value(left) and not _is_value(right):
                left, right, op = right, left, FLIP[op]
            if not _is_value(right):
                raise QueryError(f"HAVING compares with a literal value: {node.sql()!r}")
            source, value = self._ref(left, "HAVING"), _value(right)
            self._values(source, op, (value,))
            return post.Cmp(source, op, value)  # type: ignore[arg-type]
        raise QueryError(f"unsupported condition in HAVING: {node.sql()!r}; {SUBSET}")

    def _in(self, node: exp.In) -> post.InSet:
        if node.args.get("query") is not None:
            raise unsupported("a subquery in IN")
        source = self._ref(node.this, "HAVING")
        values = tuple(_value(v) for v in node.expressions)
        self._values(source, "IN", values)
        return post.InSet(source, values)


def _negated(cond: post.InSet) -> post.InSet:
    return post.InSet(cond.source, cond.values, negated=True)


def _find(aliases: dict[str, str], name: str) -> str | None:
    """What the first alias called ``name`` (ignoring case, as SQL does) stands for."""
    return next((src for a, src in aliases.items() if a.lower() == name.lower()), None)


def _columns(clause: exp.Expression | None) -> list[str]:
    """The names of the columns a clause reads."""
    return [] if clause is None else [str(c.name) for c in clause.find_all(exp.Column)]


def _is_value(node: exp.Expression) -> bool:
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null)) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)
    )


def _value(node: exp.Expression) -> post.Value:
    return None if isinstance(node, exp.Null) else literal(node)


def _count_clause(tree: exp.Select, name: str) -> int | None:
    clause = tree.args.get(name)
    if clause is None:
        return None
    value = literal(clause.expression) if isinstance(clause.expression, exp.Expression) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{name.upper()} takes a non-negative integer")
    return value
