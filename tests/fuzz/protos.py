"""Hypothesis strategies for any protobuf message of the wire contract, and byte mutations.

:func:`messages` walks a message's descriptor: every field is set or not, scalars take
edge values (0, -1, 2^63 - 1, NaN, empty, very long) and, for strings, words of the
protocol (dataset and column names, modes, aggregates, operators, node names) so that a
generated request reaches past the first check; nested messages recurse to a bounded
depth. :func:`mutated` flips, cuts, repeats and splices the bytes of a valid message.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

#: Strings a generated field is likely to hold: the protocol's own words.
WORDS = (
    "",
    "pipe_incidents",
    "taxpayers",
    "loans",
    "year",
    "bursts",
    "material",
    "repair_hours",
    "person_id",
    "amount",
    "*",
    "sum",
    "count",
    "avg",
    "var",
    "min",
    "max",
    "histogram",
    "=",
    "!=",
    "<",
    ">=",
    "plain",
    "paillier",
    "shares",
    "secagg",
    "ckks",
    "fit",
    "evaluate",
    "query",
    "intersection_sum",
    "training",
    "water-north",
    "water-east",
    "ghost",
    "alice",
    "bob",
    "service-planning",
    "job-1",
    "a" * 300,
    "x'; DROP TABLE pipe_incidents; --",
    "\x00",
    "ﾠ",
)
_INT64 = (0, 1, -1, 2, 64, 1 << 31, (1 << 63) - 1, -(1 << 63))
_UINT = (0, 1, 2, 3, 64, 1 << 31, (1 << 32) - 1)
_UINT64 = (*_UINT, (1 << 64) - 1, 1 << 53)

text = st.one_of(st.sampled_from(WORDS), st.text(max_size=40))
blobs = st.one_of(st.just(b""), st.binary(max_size=64), st.binary(min_size=250, max_size=520))


def _repeated(f: FieldDescriptor) -> bool:
    is_repeated = getattr(f, "is_repeated", None)  # protobuf >= 6; ``label`` before
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(f.label == FieldDescriptor.LABEL_REPEATED)


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return text
    if t == FieldDescriptor.TYPE_BYTES:
        return blobs
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        width = 32 if t == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width)  # NaN and the infinities included
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in f.enum_type.values])
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from(_UINT), st.integers(0, (1 << 32) - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from(_UINT64), st.integers(0, (1 << 64) - 1))
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(1 << 31), (1 << 31) - 1)
    return st.one_of(st.sampled_from(_INT64), st.integers(-(1 << 63), (1 << 63) - 1))


@st.composite
def _fill(draw: st.DrawFn, cls: type[Message], depth: int) -> Message:
    msg = cls()
    desc: Descriptor = cls.DESCRIPTOR
    for f in desc.fields:
        if not draw(st.booleans()):
            continue
        if f.containing_oneof is not None and msg.WhichOneof(f.containing_oneof.name):
            continue  # one member of a oneof at a time
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth <= 0:
                continue
            sub = _fill(GetMessageClass(f.message_type), depth - 1)
            if _repeated(f):
                getattr(msg, f.name).extend(draw(st.lists(sub, max_size=4)))
            else:
                getattr(msg, f.name).CopyFrom(draw(sub))
            continue
        if _repeated(f):
            getattr(msg, f.name).extend(draw(st.lists(_scalar(f), max_size=6)))
        else:
            setattr(msg, f.name, draw(_scalar(f)))
    return msg


def messages(cls: type[Message], depth: int = 4) -> st.SearchStrategy[Message]:
    """Messages of type ``cls`` with any fields set (see module docs)."""
    return _fill(cls, depth)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random edits: flipped bytes, a cut, a repeat, a splice."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "cut", "repeat", "insert", "truncate")))
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut" and out:
            del out[i : i + draw(st.integers(1, 16))]
        elif op == "repeat" and out:
            out[i:i] = out[i : i + draw(st.integers(1, 32))]
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del out[i:]
    return bytes(out)
