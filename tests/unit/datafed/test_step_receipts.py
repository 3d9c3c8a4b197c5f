"""The analyst checks that a node logged each protocol step it answered."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger
from audit.receipt_serde import receipt_to_proto
from datafed.client._receipts import ledger_origin
from datafed.client._session import check_step_receipt
from datafed.errors import ProtocolError
from datafed.proto.v1 import protocol_pb2
from tests.unit.audit.conftest import make_record

NODE, JOB = "water-north", "job-7"
BODY, PAYLOAD = b"signed step body", b"step reply"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _reply(tmp_path, key, **over) -> protocol_pb2.StepResponse:
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


def test_good_receipt_verifies(tmp_path, key):
    got = check_step_receipt(
        NODE, key.public_key(), JOB, hashlib.sha256(BODY).hexdigest(), _reply(tmp_path, key)
    )
    assert got.node == NODE and got.records[0].details["step"] == "aggregate"


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"decision": "denied", "result_digest": ""}, "does not match"),
        ({"job_id": "job-other"}, "does not match"),
        ({"request_digest": "0" * 64}, "does not match"),
        ({"result_digest": "1" * 64}, "does not match"),
    ],
)
def test_mismatched_receipts_are_refused(tmp_path, key, over, match):
    with pytest.raises(ProtocolError, match=match):
        check_step_receipt(
            NODE,
            key.public_key(),
            JOB,
            hashlib.sha256(BODY).hexdigest(),
            _reply(tmp_path, key, **over),
        )


def test_wrong_key_missing_or_tampered_receipt(tmp_path, key):
    digest = hashlib.sha256(BODY).hexdigest()
    reply = _reply(tmp_path, key)
    with pytest.raises(ProtocolError, match="does not verify"):
        check_step_receipt(NODE, Ed25519PrivateKey.generate().public_key(), JOB, digest, reply)
    reply.payload = b"another reply"
    with pytest.raises(ProtocolError, match="does not match"):
        check_step_receipt(NODE, key.public_key(), JOB, digest, reply)
    with pytest.raises(ProtocolError, match="does not verify"):
        check_step_receipt(
            NODE, key.public_key(), JOB, digest, protocol_pb2.StepResponse(payload=PAYLOAD)
        )
