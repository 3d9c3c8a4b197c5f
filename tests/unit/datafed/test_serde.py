import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.errors import ProtocolError, QueryError
from datafed.proto.v1 import query_pb2
from datafed.query.spec import (
    Aggregate,
    AllOf,
    AnyOf,
    Between,
    Comparison,
    InList,
    Not,
    QuerySpec,
)
from datafed.wire.serde import spec_from_proto, spec_to_proto

idents = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
scalars = st.one_of(
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.booleans(),
)
leaves = st.one_of(
    st.builds(
        Comparison,
        column=idents,
        op=st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
        value=scalars,
    ),
    st.builds(
        InList,
        column=idents,
        values=st.lists(scalars, min_size=1, max_size=4).map(tuple),
        negated=st.booleans(),
    ),
    st.builds(Between, column=idents, low=scalars, high=scalars),
)
predicates = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(AllOf, items=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(AnyOf, items=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(Not, item=inner),
    ),
    max_leaves=8,
)
aggregates = st.one_of(
    st.just(Aggregate(func="count", column="*")),
    st.builds(
        Aggregate, func=st.sampled_from(["sum", "count", "avg", "var", "min", "max"]), column=idents
    ),
)
specs = st.builds(
    QuerySpec,
    dataset=idents,
    aggregates=st.lists(aggregates, min_size=1, max_size=4).map(tuple),
    group_by=st.lists(idents, max_size=3, unique=True).map(tuple),
    where=st.none() | predicates,
)


@settings(max_examples=150)
@given(specs)
def test_spec_roundtrip(spec):
    wire = spec_to_proto(spec).SerializeToString()
    assert spec_from_proto(query_pb2.QuerySpec.FromString(wire)) == spec


def test_bad_wire_spec_is_a_clear_error():
    msg = query_pb2.QuerySpec(
        dataset="t; DROP", aggregates=[query_pb2.Aggregate(func="sum", column="a")]
    )
    with pytest.raises(QueryError, match="dataset"):
        spec_from_proto(msg)
    msg = query_pb2.QuerySpec(
        dataset="t", aggregates=[query_pb2.Aggregate(func="exec", column="a")]
    )
    with pytest.raises(QueryError, match="func"):
        spec_from_proto(msg)


def test_deep_predicate_refused():
    p = query_pb2.Predicate(
        comparison=query_pb2.Comparison(column="a", op="=", value={"int_value": 1})
    )
    for _ in range(40):
        p = query_pb2.Predicate(negate=p)
    msg = query_pb2.QuerySpec(
        dataset="t", aggregates=[query_pb2.Aggregate(func="count", column="*")], where=p
    )
    with pytest.raises(ProtocolError, match="nested deeper"):
        spec_from_proto(msg)


def test_empty_literal_refused():
    p = query_pb2.Predicate(comparison=query_pb2.Comparison(column="a", op="="))
    msg = query_pb2.QuerySpec(
        dataset="t", aggregates=[query_pb2.Aggregate(func="count", column="*")], where=p
    )
    with pytest.raises(ProtocolError, match="no value"):
        spec_from_proto(msg)
