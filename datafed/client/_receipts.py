"""Checking a node's receipt before its answer is used.

The receipt must verify against the node's pinned log key (the Ed25519 key bound in its
CA-issued certificate) and origin, and its records must be this request's: the same node
and job, the digest of the signed request we sent, and a ``released`` entry whose result
digest is the digest of the answer itself.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ed25519

from audit.errors import InvalidReceipt
from audit.receipt_serde import receipt_from_proto
from audit.receipts import verify_receipt
from datafed.errors import ProtocolError
from datafed.proto.v1 import query_pb2
from datafed.query.result import NodeReceipt

__all__ = ["answer_digest", "check_receipt", "ledger_origin"]


def ledger_origin(node: str) -> str:
    """The C2SP origin of a node's ledger (the node uses the same)."""
    return f"datafed/ledger/{node}"


def answer_digest(reply: query_pb2.QueryResponse) -> str:
    """Hex SHA-256 of an answer with its ledger head and receipt cleared."""
    bare = query_pb2.QueryResponse()
    bare.CopyFrom(reply)
    bare.ClearField("ledger")
    bare.ClearField("receipt")
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def check_receipt(
    node: str,
    key: ed25519.Ed25519PublicKey,
    job: str,
    request_digest: str,
    reply: query_pb2.QueryResponse,
) -> NodeReceipt:
    """Verify ``reply``'s receipt; raise :class:`ProtocolError` naming the node if it fails."""
    if not reply.HasField("receipt"):
        raise ProtocolError(f"node {node!r} sent no receipt")
    try:
        receipt = receipt_from_proto(reply.receipt)
        records = verify_receipt(receipt, ledger_origin(node), key)
    except (InvalidReceipt, ValueError) as exc:
        raise ProtocolError(f"node {node!r}: receipt does not verify") from exc
    decisions = [r.decision for r in records]
    ok = (
        decisions == ["approved", "released"]
        and all(r.node == node and r.job_id == job for r in records)
        and all(r.request_digest == request_digest for r in records)
        and records[1].result_digest == answer_digest(reply)
    )
    if not ok:
        raise ProtocolError(f"node {node!r}: receipt does not match its answer")
    return NodeReceipt(node=node, checkpoint=receipt.checkpoint, records=tuple(records))
