"""Query specs that are mostly well-formed, with hostile values where a node must cope.

:func:`specs` builds ``QuerySpec`` messages shaped like what the client sends -- a served
dataset, known columns, the accepted aggregates and operators -- so that a fuzzed query
gets past decoding into policy, compilation and the database, while its literals,
columns, bin edges and tree shapes take edge values (NaN, 2^63 - 1, long and odd text,
unknown columns, empty lists) that the node must refuse cleanly or answer correctly.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st

from datafed.proto.v1 import common_pb2, query_pb2

T = TypeVar("T")


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``good`` nine times in ten, ``bad`` otherwise (hypothesis starts from ``good``)."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


COLUMNS = ("year", "month", "bursts", "material", "repair_hours", "district", "segment")
columns = mostly(
    st.sampled_from(COLUMNS), st.sampled_from(("nope", "rowid", "a" * 65, "", "Year", "1x"))
)
FUNCS = ("sum", "count", "avg", "var", "min", "max", "histogram")
OPS = ("=", "!=", "<", "<=", ">", ">=")


@st.composite
def literals(draw: st.DrawFn) -> common_pb2.Literal:
    """A literal of any kind, or an empty one (which a node must refuse)."""
    kind = draw(st.integers(0, 20))
    if kind == 20:
        return common_pb2.Literal()
    kind = kind % 8 + 1
    if kind <= 2:
        return common_pb2.Literal(
            int_value=draw(
                st.one_of(st.integers(-5, 3000), st.sampled_from((-(1 << 63), (1 << 63) - 1)))
            )
        )
    if kind <= 4:
        return common_pb2.Literal(float_value=draw(st.floats()))
    if kind <= 6:
        return common_pb2.Literal(
            string_value=draw(
                st.one_of(
                    st.sampled_from(("pvc", "steel", "cast_iron", "", "%", "north")),
                    st.text(max_size=300),
                )
            )
        )
    return common_pb2.Literal(bool_value=draw(st.booleans()))


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> query_pb2.Predicate:
    """A WHERE tree: leaves of every kind, AND/OR/NOT above them, sometimes empty."""
    kind = draw(st.integers(0, 5 if depth < 3 else 2))
    if draw(st.integers(0, 19)) == 19:
        kind = 6
    p = query_pb2.Predicate()
    if kind == 0:
        p.comparison.CopyFrom(
            query_pb2.Comparison(
                column=draw(columns),
                op=draw(mostly(st.sampled_from(OPS), st.sampled_from(("==", "LIKE", "")))),
                value=draw(literals()),
            )
        )
    elif kind == 1:
        p.in_list.column = draw(columns)
        p.in_list.values.extend(draw(st.lists(literals(), max_size=draw(st.sampled_from((4, 40))))))
        p.in_list.negated = draw(st.booleans())
    elif kind == 2:
        p.between.CopyFrom(
            query_pb2.Between(column=draw(columns), low=draw(literals()), high=draw(literals()))
        )
    elif kind in (3, 4):
        items = draw(
            st.lists(
                predicates(depth + 1), min_size=draw(mostly(st.just(1), st.just(0))), max_size=4
            )
        )
        (p.all_of if kind == 3 else p.any_of).items.extend(items)
    elif kind == 5:
        p.negate.CopyFrom(draw(predicates(depth + 1)))
    # kind 6: a predicate with no kind at all
    return p


@st.composite
def aggregates(draw: st.DrawFn) -> query_pb2.Aggregate:
    func = draw(mostly(st.sampled_from(FUNCS), st.sampled_from(("median", ""))))
    column = "*" if func == "count" and draw(st.booleans()) else draw(columns)
    agg = query_pb2.Aggregate(func=func, column=column)
    if func == "histogram" or draw(st.integers(0, 9)) == 0:
        edges = draw(
            mostly(
                st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=8, unique=True).map(sorted),
                st.lists(st.floats(), max_size=70),
            )
        )
        agg.bins.extend(edges)
    return agg


@st.composite
def specs(draw: st.DrawFn) -> query_pb2.QuerySpec:
    """A spec over ``pipe_incidents`` (mostly), shaped as the client would send it."""
    spec = query_pb2.QuerySpec(
        dataset=draw(mostly(st.just("pipe_incidents"), st.sampled_from(("loans", "x", "")))),
        aggregates=draw(
            st.lists(aggregates(), min_size=draw(mostly(st.just(1), st.just(0))), max_size=4)
        ),
        group_by=draw(st.lists(columns, max_size=3)),
    )
    if draw(st.booleans()):
        spec.where.CopyFrom(draw(predicates()))
    return spec
