import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from audit import DataUseRecord, Ledger
from audit.receipt_serde import receipt_to_proto
from datafed.client._receipts import answer_digest, check_receipt, ledger_origin
from datafed.errors import ProtocolError
from datafed.proto.v1 import query_pb2

NODE, JOB = "water-north", "job-1"
REQ = hashlib.sha256(b"signed body").hexdigest()


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


def test_valid_receipt(signed_reply):
    key, reply = signed_reply
    got = check_receipt(NODE, key.public_key(), JOB, REQ, reply)
    assert [r.decision for r in got.records] == ["approved", "released"]
    assert got.checkpoint.startswith(ledger_origin(NODE) + "\n")


def test_receipt_refusals(signed_reply):
    key, reply = signed_reply
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ProtocolError, match="does not verify"):
        check_receipt(NODE, other, JOB, REQ, reply)  # signed by another key
    with pytest.raises(ProtocolError, match="does not match"):
        check_receipt(NODE, key.public_key(), "job-2", REQ, reply)  # another job
    with pytest.raises(ProtocolError, match="does not match"):
        check_receipt(NODE, key.public_key(), JOB, "0" * 64, reply)  # another request
    changed = query_pb2.QueryResponse()
    changed.CopyFrom(reply)
    changed.payload = b"swapped answer"
    with pytest.raises(ProtocolError, match="does not match"):
        check_receipt(NODE, key.public_key(), JOB, REQ, changed)  # answer not the logged one
    flipped = query_pb2.QueryResponse()
    flipped.CopyFrom(reply)
    leaf = bytearray(flipped.receipt.entries[1].leaf)
    leaf[-1] ^= 1
    flipped.receipt.entries[1].leaf = bytes(leaf)
    with pytest.raises(ProtocolError, match="does not verify"):
        check_receipt(NODE, key.public_key(), JOB, REQ, flipped)
    bare = query_pb2.QueryResponse(node=NODE, job_id=JOB)
    with pytest.raises(ProtocolError, match="no receipt"):
        check_receipt(NODE, key.public_key(), JOB, REQ, bare)
