"""Conversion between protobuf messages and datafed's domain objects.

This is the only module of the library that touches ``*_pb2`` types for queries; the
node has its own thin serde that calls these functions.  Conversions from the wire
validate as they go and raise :class:`~datafed.errors.ProtocolError` (or
:class:`~datafed.errors.QueryError` for a spec that does not validate).
"""

from __future__ import annotations

from pydantic import ValidationError

from datafed.errors import ProtocolError, QueryError
from datafed.proto.v1 import common_pb2, query_pb2
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
from datafed.wire.fields import from_message, to_message
from datafed.wire.signing import RequestHeader

__all__ = [
    "MAX_PREDICATE_DEPTH",
    "MAX_PREDICATE_NODES",
    "MAX_WHERE_VALUES",
    "header_from_proto",
    "header_to_proto",
    "literal_from_proto",
    "literal_to_proto",
    "spec_from_proto",
    "spec_to_proto",
    "where_size",
]

MAX_PREDICATE_DEPTH = 16
#: Conditions (predicate nodes) a WHERE may hold: the SQL front end's 10,000 characters
#: make at most a few hundred; more is a crafted spec (``docs/policy.md#limits``).
MAX_PREDICATE_NODES = 256
#: Literal values a WHERE may hold in all (IN lists, comparisons, BETWEEN bounds): each
#: is one bound parameter, and SQLite binds at most 32,766 per statement.
MAX_WHERE_VALUES = 4096


def literal_to_proto(value: Scalar | None) -> common_pb2.Literal:
    """Encode a scalar (``None`` encodes as an empty literal)."""
    msg = common_pb2.Literal()
    if value is None:
        return msg
    if isinstance(value, bool):
        msg.bool_value = value
    elif isinstance(value, int):
        msg.int_value = value
    elif isinstance(value, float):
        msg.float_value = value
    elif isinstance(value, str):
        msg.string_value = value
    else:
        raise TypeError(f"unsupported literal type {type(value).__name__}")
    return msg


def literal_from_proto(msg: common_pb2.Literal) -> Scalar | None:
    """Decode a literal; an empty one is ``None``."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        return None
    value: Scalar = getattr(msg, kind)
    return value


def _required(msg: common_pb2.Literal, what: str) -> Scalar:
    value = literal_from_proto(msg)
    if value is None:
        raise ProtocolError(f"{what} has no value")
    return value


def header_to_proto(h: RequestHeader) -> common_pb2.RequestHeader:
    """Encode a request header."""
    return to_message(common_pb2.RequestHeader, h)


def header_from_proto(msg: common_pb2.RequestHeader) -> RequestHeader:
    """Decode a request header."""
    return from_message(RequestHeader, msg)


def _pred_to_proto(p: Predicate) -> query_pb2.Predicate:
    msg = query_pb2.Predicate()
    if isinstance(p, Comparison):
        msg.comparison.CopyFrom(
            query_pb2.Comparison(column=p.column, op=p.op, value=literal_to_proto(p.value))
        )
    elif isinstance(p, InList):
        msg.in_list.CopyFrom(
            query_pb2.InList(
                column=p.column, values=[literal_to_proto(v) for v in p.values], negated=p.negated
            )
        )
    elif isinstance(p, Between):
        msg.between.CopyFrom(
            query_pb2.Between(
                column=p.column, low=literal_to_proto(p.low), high=literal_to_proto(p.high)
            )
        )
    elif isinstance(p, AllOf):
        msg.all_of.items.extend(_pred_to_proto(i) for i in p.items)
    elif isinstance(p, AnyOf):
        msg.any_of.items.extend(_pred_to_proto(i) for i in p.items)
    else:
        msg.negate.CopyFrom(_pred_to_proto(p.item))
    return msg


def _pred_from_proto(msg: query_pb2.Predicate, depth: int = 0) -> Predicate:
    if depth > MAX_PREDICATE_DEPTH:
        raise ProtocolError(f"WHERE clause nested deeper than {MAX_PREDICATE_DEPTH}")
    kind = msg.WhichOneof("kind")
    if kind == "comparison":
        c = msg.comparison
        return Comparison(column=c.column, op=c.op, value=_required(c.value, "comparison"))  # type: ignore[arg-type]
    if kind == "in_list":
        i = msg.in_list
        values = tuple(_required(v, "IN list") for v in i.values)
        return InList(column=i.column, values=values, negated=i.negated)
    if kind == "between":
        b = msg.between
        return Between(
            column=b.column, low=_required(b.low, "BETWEEN"), high=_required(b.high, "BETWEEN")
        )
    if kind == "all_of":
        return AllOf(items=tuple(_pred_from_proto(i, depth + 1) for i in msg.all_of.items))
    if kind == "any_of":
        return AnyOf(items=tuple(_pred_from_proto(i, depth + 1) for i in msg.any_of.items))
    if kind == "negate":
        return Not(item=_pred_from_proto(msg.negate, depth + 1))
    raise ProtocolError("predicate has no kind")


def spec_to_proto(spec: QuerySpec) -> query_pb2.QuerySpec:
    """Encode a query spec."""
    msg = query_pb2.QuerySpec(
        dataset=spec.dataset,
        group_by=list(spec.group_by),
        aggregates=[
            query_pb2.Aggregate(func=a.func, column=a.column, bins=list(a.bins))
            for a in spec.aggregates
        ],
    )
    if spec.where is not None:
        msg.where.CopyFrom(_pred_to_proto(spec.where))
    return msg


def where_size(msg: query_pb2.Predicate, stop: int = MAX_PREDICATE_NODES) -> tuple[int, int]:
    """Count a WHERE message's conditions and literal values, without recursion.

    Counting stops as soon as more than ``stop`` conditions are seen (the count returned
    is then above ``stop``, and the values may be undercounted), so a crafted tree costs
    little to refuse.
    """
    nodes = values = 0
    stack = [msg]
    while stack:
        p = stack.pop()
        nodes += 1
        kind = p.WhichOneof("kind")
        if kind == "in_list":
            values += len(p.in_list.values)
        elif kind == "comparison":
            values += 1
        elif kind == "between":
            values += 2
        elif kind in ("all_of", "any_of"):
            items = p.all_of.items if kind == "all_of" else p.any_of.items
            if nodes + len(stack) + len(items) > stop:
                return nodes + len(stack) + len(items), values
            stack.extend(items)
        elif kind == "negate":
            stack.append(p.negate)
        if nodes > stop:
            break
    return nodes, values


def spec_from_proto(
    msg: query_pb2.QuerySpec,
    *,
    max_conditions: int = MAX_PREDICATE_NODES,
    max_values: int = MAX_WHERE_VALUES,
) -> QuerySpec:
    """Decode and validate a query spec; the WHERE may hold at most the given sizes.

    Raises
    ------
    QueryError
        The spec does not validate, or its WHERE is too large or malformed.
    """
    if msg.HasField("where"):
        nodes, values = where_size(msg.where, max_conditions)
        if nodes > max_conditions:
            raise QueryError(f"the WHERE clause has more than {max_conditions:,} conditions")
        if values > max_values:
            raise QueryError(
                f"the WHERE clause holds {values:,} values; at most {max_values:,} are accepted"
            )
    try:
        where = _pred_from_proto(msg.where) if msg.HasField("where") else None
        return QuerySpec(
            dataset=msg.dataset,
            group_by=tuple(msg.group_by),
            aggregates=tuple(
                Aggregate(func=a.func, column=a.column, bins=tuple(a.bins))  # type: ignore[arg-type]
                for a in msg.aggregates
            ),
            where=where,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise QueryError(f"invalid query spec at {loc or 'spec'}: {err['msg']}") from exc
