"""Checking a node's receipt before its answer is used (one check for every client call).

The receipt must verify against the node's pinned log key (the Ed25519 key bound in its
CA-issued certificate) and origin, and its records must be this request's: the same node
and job, the digests of the signed requests we sent, and a last entry whose result digest
is the digest of the answer itself (:func:`audit.check_receipt` does both).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from audit import check_receipt
from audit.errors import InvalidReceipt
from audit.ledger_serde import receipt_from_proto
from datafed.errors import ProtocolError
from datafed.proto.v1 import ledger_pb2, query_pb2
from datafed.query.result import NodeReceipt

__all__ = ["answer_digest", "node_receipt"]


def answer_digest(reply: query_pb2.QueryResponse) -> str:
    """Hex SHA-256 of an answer with its ledger head and receipt cleared."""
    bare = query_pb2.QueryResponse()
    bare.CopyFrom(reply)
    bare.ClearField("ledger")
    bare.ClearField("receipt")
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def node_receipt(
    node: str,
    key: ed25519.Ed25519PublicKey,
    receipt: ledger_pb2.Receipt | None,
    *,
    job_id: str,
    request_digests: Sequence[str],
    decisions: Sequence[str],
    result_digest: str,
) -> NodeReceipt:
    """Verify one answer's receipt; raise :class:`ProtocolError` naming the node if it fails."""
    if receipt is None or not receipt.checkpoint:
        raise ProtocolError(f"node {node!r} sent no receipt")
    try:
        parsed = receipt_from_proto(receipt)
        records = check_receipt(
            parsed,
            key,
            node=node,
            job_id=job_id,
            request_digests=request_digests,
            decisions=decisions,
            result_digest=result_digest,
        )
    except (InvalidReceipt, ValueError) as exc:
        raise ProtocolError(f"node {node!r}: {exc}") from exc
    return NodeReceipt(node=node, checkpoint=parsed.checkpoint, records=tuple(records))
