"""The one receipt check of every client call: query answers and protocol steps alike."""

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from audit import DataUseRecord, Ledger, ledger_origin
from audit.ledger_serde import receipt_to_proto
from datafed.client._receipts import answer_digest, node_receipt
from datafed.errors import ProtocolError
from datafed.proto.v1 import protocol_pb2, query_pb2
from tests.unit.audit.conftest import make_record

NODE, JOB = "water-north", "job-1"
REQ = hashlib.sha256(b"signed body").hexdigest()
BODY, PAYLOAD = b"signed step body", b"step reply"


def record(decision: str, result_digest: str = "", job: str = JOB) -> DataUseRecord:
    return DataUseRecord(
        node=NODE,
        requester="alice",
        requester_role="analyst",
        dataset="pipe_incidents",
        purpose="planning",
        legal_basis="",
        operation="query",
        protection="paillier",
        request_digest=REQ,
        result_digest=result_digest,
        decision=decision,
        reason="ok",
        epsilon=0.0,
        job_id=job,
        time_ms=1,
        details={},
    )


@pytest.fixture
def signed_reply(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    reply = query_pb2.QueryResponse(node=NODE, job_id=JOB, payload=b"protected")
    with Ledger.open(tmp_path / "l.sqlite", ledger_origin(NODE), key) as ledger:
        a = ledger.append(record("approved"))
        r = ledger.append(record("released", answer_digest(reply)))
        reply.receipt.CopyFrom(receipt_to_proto(ledger.receipt([a, r])))
    return key, reply


def check_answer(key, reply, job=JOB, req=REQ):
    return node_receipt(
        NODE,
        key,
        reply.receipt if reply.HasField("receipt") else None,
        job_id=job,
        request_digests=[req, req],
        decisions=["approved", "released"],
        result_digest=answer_digest(reply),
    )


def test_valid_receipt(signed_reply):
    key, reply = signed_reply
    got = check_answer(key.public_key(), reply)
    assert [r.decision for r in got.records] == ["approved", "released"]
    assert got.checkpoint.startswith(ledger_origin(NODE) + "\n")


def test_receipt_refusals(signed_reply):
    key, reply = signed_reply
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ProtocolError, match="does not verify"):
        check_answer(other, reply)  # signed by another key
    with pytest.raises(ProtocolError, match="does not match"):
        check_answer(key.public_key(), reply, job="job-2")  # another job
    with pytest.raises(ProtocolError, match="does not match"):
        check_answer(key.public_key(), reply, req="0" * 64)  # another request
    changed = query_pb2.QueryResponse()
    changed.CopyFrom(reply)
    changed.payload = b"swapped answer"
    with pytest.raises(ProtocolError, match="does not match"):
        check_answer(key.public_key(), changed)  # answer not the logged one
    flipped = query_pb2.QueryResponse()
    flipped.CopyFrom(reply)
    leaf = bytearray(flipped.receipt.entries[1].leaf)
    leaf[-1] ^= 1
    flipped.receipt.entries[1].leaf = bytes(leaf)
    with pytest.raises(ProtocolError, match="does not verify"):
        check_answer(key.public_key(), flipped)
    with pytest.raises(ProtocolError, match="no receipt"):
        check_answer(key.public_key(), query_pb2.QueryResponse(node=NODE, job_id=JOB))


def _step_reply(tmp_path, key, **over) -> protocol_pb2.StepResponse:
    fields = {
        "job_id": JOB,
        "decision": "released",
        "request_digest": hashlib.sha256(BODY).hexdigest(),
        "result_digest": hashlib.sha256(PAYLOAD).hexdigest(),
        "details": {"step": "aggregate", "step_round": "1"},
        **over,
    }
    with Ledger.open(
        tmp_path / f"l{len(list(tmp_path.iterdir()))}.db", ledger_origin(NODE), key
    ) as ledger:
        ledger.append(make_record(1))
        index = ledger.append(make_record(2, **fields))
        receipt = ledger.receipt([index])
    return protocol_pb2.StepResponse(
        node=NODE, job_id=JOB, round=1, payload=PAYLOAD, receipt=receipt_to_proto(receipt)
    )


def check_step(key, reply):
    return node_receipt(
        NODE,
        key,
        reply.receipt if reply.HasField("receipt") else None,
        job_id=JOB,
        request_digests=[hashlib.sha256(BODY).hexdigest()],
        decisions=["released"],
        result_digest=hashlib.sha256(reply.payload).hexdigest(),
    )


def test_good_step_receipt_verifies(tmp_path):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    got = check_step(key.public_key(), _step_reply(tmp_path, key))
    assert got.node == NODE and got.records[0].details["step"] == "aggregate"


@pytest.mark.parametrize(
    "over",
    [
        {"decision": "denied", "result_digest": ""},
        {"job_id": "job-other"},
        {"request_digest": "0" * 64},
        {"result_digest": "1" * 64},
    ],
)
def test_mismatched_step_receipts_are_refused(tmp_path, over):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    with pytest.raises(ProtocolError, match="does not match"):
        check_step(key.public_key(), _step_reply(tmp_path, key, **over))


def test_wrong_key_missing_or_tampered_step_receipt(tmp_path):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    reply = _step_reply(tmp_path, key)
    with pytest.raises(ProtocolError, match="does not verify"):
        check_step(ed25519.Ed25519PrivateKey.generate().public_key(), reply)
    reply.payload = b"another reply"
    with pytest.raises(ProtocolError, match="does not match"):
        check_step(key.public_key(), reply)
    with pytest.raises(ProtocolError, match="no receipt"):
        check_step(key.public_key(), protocol_pb2.StepResponse(payload=PAYLOAD))
