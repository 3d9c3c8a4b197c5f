"""Fuzzing what an auditor parses: leaves, notes, checkpoints, openings, keys, receipts.

Random bytes and edits of valid encodings must give the documented error of each parser
(:mod:`audit.errors`, or ``ValueError`` where documented), and anything that parses must
be canonical: it encodes back to the same bytes, so one record has one leaf.
"""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from audit import decode_leaf, merkle
from audit.checkpoint import Checkpoint, log_verifier, open_checkpoint, sign_checkpoint
from audit.errors import InvalidReceipt, InvalidRecord, InvalidSignature
from audit.ledger_serde import entries_from_proto, proof_hashes, receipt_from_proto
from audit.note import parse_note, parse_vkey, vkey
from audit.private import decode_opening, encode_opening
from audit.receipts import Receipt, ReceiptEntry, verify_receipt
from audit.records import encode_body, encode_leaf
from datafed.proto.v1 import ledger_pb2
from tests.fuzz.protos import messages, mutated
from tests.fuzz.settings import fuzz
from tests.unit.audit.conftest import make_record

ORIGIN = "datafed/ledger/water-north"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
LOG = log_verifier(ORIGIN, KEY)
RECORD = replace(make_record(3), details={"statement": "ab" * 32, "step": "aggregate"})
LEAF = encode_leaf(41, encode_body(RECORD))
NOTE = sign_checkpoint(Checkpoint(ORIGIN, 42, b"\x11" * 32), KEY)
OPENING = encode_opening(b"s" * 16, {"groups_released": "4", "groups_suppressed": "1"})


@fuzz(150)
@given(st.one_of(mutated(LEAF), st.binary(max_size=200)))
def test_leaves(leaf: bytes) -> None:
    try:
        index, record = decode_leaf(leaf)
    except InvalidRecord:
        return
    assert encode_leaf(index, encode_body(record)) == leaf


@fuzz(120)
@given(st.one_of(mutated(NOTE.encode()), st.binary(max_size=200), st.text(max_size=200)))
def test_notes_and_checkpoints(note: bytes | str) -> None:
    try:
        parse_note(note)
    except InvalidSignature:
        pass
    try:
        opened = open_checkpoint(note, LOG)
    except InvalidSignature:
        return
    # Only the signed text can open: the size and root are the ones signed.
    assert opened.checkpoint == Checkpoint(ORIGIN, 42, b"\x11" * 32)


@fuzz(80)
@given(st.text(max_size=120))
def test_checkpoint_text(text: str) -> None:
    try:
        cp = Checkpoint.parse(text)
    except ValueError:
        return
    assert cp.text() == text


@fuzz(100)
@given(st.one_of(mutated(OPENING), st.binary(max_size=120)))
def test_private_openings(opening: bytes) -> None:
    try:
        salt, details = decode_opening(opening)
    except ValueError:
        return
    assert encode_opening(salt, details) == opening


@fuzz(80)
@given(
    st.one_of(
        st.text(max_size=120),
        mutated(vkey(ORIGIN, 1, LOG.public_key).encode()).map(
            lambda b: b.decode("utf-8", "replace")
        ),
    )
)
def test_verifier_keys(text: str) -> None:
    try:
        parse_vkey(text)
    except ValueError:
        pass


@fuzz(80)
@given(messages(ledger_pb2.Receipt, depth=2), st.data())
def test_receipts(msg: ledger_pb2.Receipt, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        msg.checkpoint = data.draw(mutated(NOTE.encode()))
    try:
        receipt = receipt_from_proto(msg)
    except ValueError:
        return
    try:
        verify_receipt(receipt, ORIGIN, LOG.public_key)
    except InvalidReceipt:
        return
    raise AssertionError("a receipt built from random parts verified")


def test_a_genuine_receipt_verifies() -> None:
    """The oracle above is sound: a one-entry receipt built right verifies."""
    leaf = encode_leaf(0, encode_body(RECORD))
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, merkle.hash_leaf(leaf)), KEY)
    receipt = Receipt(note, (ReceiptEntry(0, leaf, ()),))
    assert verify_receipt(receipt, ORIGIN, LOG.public_key) == [RECORD]


@fuzz(60)
@given(messages(ledger_pb2.GetEntriesResponse, depth=1), st.integers(0, 5), st.integers(0, 5))
def test_entries_and_proofs(msg: ledger_pb2.GetEntriesResponse, start: int, count: int) -> None:
    try:
        leaves, private = entries_from_proto(msg, start, count)
    except ValueError:
        return
    assert len(leaves) == count and all(start <= i < start + count for i in private)
    try:
        proof_hashes(list(msg.leaves))
    except ValueError:
        pass
