from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import DataUseRecord, InvalidRecord, decode_leaf
from audit.records import LEAF_TAG, SCHEMA_VERSION, encode_body, encode_leaf

from .conftest import make_record

text = st.text(max_size=40)
records = st.builds(
    make_record,
    st.integers(0, 1000),
    requester=text,
    purpose=text,
    reason=text,
    decision=st.sampled_from(["approved", "denied", "released"]),
    epsilon=st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    time_ms=st.integers(0, 2**63 - 1),
    details=st.dictionaries(text, text, max_size=5),
)


@given(records, st.integers(0, 2**64 - 1))
def test_roundtrip(rec: DataUseRecord, index: int) -> None:
    leaf = encode_leaf(index, encode_body(rec))
    assert decode_leaf(leaf) == (index, rec)


def test_known_layout() -> None:
    rec = make_record(1, details={"round": "3"}, epsilon=0.5)
    leaf = encode_leaf(7, encode_body(rec))
    assert leaf.startswith(LEAF_TAG + b"\x00" + bytes([SCHEMA_VERSION]) + (7).to_bytes(8, "big"))
    assert leaf.endswith(struct.pack(">dQI", 0.5, rec.time_ms, 1) + b"\0\0\0\x05round\0\0\0\x013")


def test_negative_zero_epsilon_is_canonical() -> None:
    a, b = make_record(epsilon=0.0), make_record(epsilon=-0.0)
    assert encode_body(a) == encode_body(b)
    assert math.copysign(1, b.epsilon) == 1


def test_details_order_is_canonical() -> None:
    a = make_record(details={"a": "1", "b": "2"})
    b = make_record(details={"b": "2", "a": "1"})
    assert encode_body(a) == encode_body(b)


@given(records, st.data())
def test_any_bit_flip_is_rejected_or_changes_record(
    rec: DataUseRecord, data: st.DataObject
) -> None:
    leaf = bytearray(encode_leaf(5, encode_body(rec)))
    pos = data.draw(st.integers(0, len(leaf) * 8 - 1))
    leaf[pos // 8] ^= 1 << (pos % 8)
    try:
        index, got = decode_leaf(bytes(leaf))
    except InvalidRecord:
        return
    assert (index, got) != (5, rec)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b"x" + b[1:],
        lambda b: b[: len(LEAF_TAG) + 1] + b"\x03" + b[len(LEAF_TAG) + 2 :],
        lambda b: b"",
    ],
    ids=["truncated", "trailing", "tag", "version", "empty"],
)
def test_malformed_leaves_rejected(mutate: object) -> None:
    leaf = encode_leaf(0, encode_body(make_record()))
    with pytest.raises(InvalidRecord):
        decode_leaf(mutate(leaf))  # type: ignore[operator]


def test_unsorted_details_rejected() -> None:
    rec = make_record(details={"a": "1", "b": "2"})
    leaf = encode_leaf(0, encode_body(rec))
    swapped = leaf.replace(
        b"\0\0\0\x01a\0\0\0\x011\0\0\0\x01b\0\0\0\x012",
        b"\0\0\0\x01b\0\0\0\x012\0\0\0\x01a\0\0\0\x011",
    )
    assert swapped != leaf
    with pytest.raises(InvalidRecord):
        decode_leaf(swapped)


@pytest.mark.parametrize(
    ("over", "exc", "msg"),
    [
        ({"decision": "maybe"}, ValueError, "decision must be one of"),
        ({"epsilon": float("nan")}, ValueError, "epsilon must be finite and >= 0, got nan"),
        ({"epsilon": -1.0}, ValueError, "epsilon must be finite"),
        ({"epsilon": "1"}, TypeError, "epsilon must be a float, got str"),
        ({"epsilon": True}, TypeError, "epsilon must be a float, got bool"),
        ({"time_ms": 1.5}, TypeError, "time_ms must be an int, got float"),
        ({"time_ms": -1}, ValueError, "time_ms must be in"),
        ({"request_digest": "ABC"}, ValueError, "request_digest must be empty or 64 lowercase hex"),
        ({"result_digest": "A" * 64}, ValueError, "result_digest must be empty or 64"),
        ({"node": None}, TypeError, "node must be a str, got NoneType"),
        ({"reason": "x" * 5000}, ValueError, "reason must be at most 4096 UTF-8 bytes"),
        ({"details": {"k": 1}}, TypeError, "details['k'] must be a str, got int"),
        ({"details": {str(i): "" for i in range(65)}}, ValueError, "details may hold at most 64"),
    ],
)
def test_bad_arguments(over: dict[str, object], exc: type[Exception], msg: str) -> None:
    with pytest.raises(exc, match=msg.replace("[", r"\[").replace("(", r"\(")):
        make_record(**over)


def test_version_1_leaves_stay_decodable() -> None:
    """Leaves written before private parts existed (schema 1) decode, and only canonically."""
    rec = make_record(3, details={"round": "1"})
    v2 = encode_leaf(9, encode_body(rec))
    prefix2 = LEAF_TAG + b"\x00\x02" + (9).to_bytes(8, "big")
    assert v2.startswith(prefix2 + b"\x00")  # version 2, no commitment
    v1 = LEAF_TAG + b"\x00\x01" + (9).to_bytes(8, "big") + v2[len(prefix2) + 1 :]
    assert decode_leaf(v1) == (9, rec)
    with pytest.raises(InvalidRecord):  # a commitment byte in a version 1 leaf is garbage
        decode_leaf(LEAF_TAG + b"\x00\x01" + (9).to_bytes(8, "big") + v2[len(prefix2) :])


def test_commitment_layout_and_known_answer() -> None:
    import hashlib

    from audit.private import commitment, decode_opening, encode_opening

    salt = bytes(range(16))
    opening = encode_opening(salt, {"rows": "12", "groups": "3"})
    # canonical map: u32 count, then sorted (key, value) strings, each u32 length || UTF-8
    assert opening == salt + bytes.fromhex(
        "00000002" "00000006" "67726f757073" "00000001" "33" "00000004" "726f7773" "00000002" "3132"
    )  # fmt: skip
    want = hashlib.sha256(b"datafed/audit/private-details\x00" + opening).hexdigest()
    assert commitment(opening) == want
    assert decode_opening(opening) == (salt, {"groups": "3", "rows": "12"})
    rec = make_record(1, private_commitment=want)
    leaf = encode_leaf(4, encode_body(rec))
    head = len(LEAF_TAG) + 2 + 8
    assert leaf[head : head + 33] == b"\x01" + bytes.fromhex(want)
    assert decode_leaf(leaf) == (4, rec)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\x00",  # trailing
        lambda b: b[:16] + b"\x00\x00\x00\x03" + b[20:],  # count beyond the data
        lambda b: b[:16] + b"\x00\x00\x00\x02" + b[20:] + b[20:],  # duplicate key
        lambda b: b[:10],  # short salt
    ],
)
def test_malformed_openings_rejected(mutate: object) -> None:
    from audit.private import decode_opening, encode_opening

    opening = encode_opening(b"\x07" * 16, {"k": "v"})
    with pytest.raises(ValueError, match="canonical"):
        decode_opening(mutate(opening))  # type: ignore[operator]


def test_bad_commitment_field_refused() -> None:
    with pytest.raises(ValueError, match="private_commitment must be empty or 64"):
        make_record(0, private_commitment="AB" * 32)


@given(st.binary(max_size=200))
def test_random_openings_fail_cleanly(data: bytes) -> None:
    from audit.private import decode_opening, encode_opening

    try:
        salt, details = decode_opening(data)
    except ValueError:
        return
    assert encode_opening(salt, details) == data  # anything accepted is canonical


@given(st.binary(max_size=300))
def test_random_private_files_fail_cleanly(data: bytes) -> None:
    from audit.export import read_private

    try:
        parts = read_private(data)
    except ValueError:
        return
    assert sorted(parts) == list(parts)
