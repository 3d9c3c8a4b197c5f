"""Conversion between the PSI wire messages (``psi.proto``) and :mod:`datafed.psi` objects.

The only module that touches ``psi_pb2`` types; the analyst's client and the node's
servicer both go through it.  Bulk payloads travel as chunks after a first frame that
carries the signed request (uploads) or the step reply (downloads); the receiver checks
the total against the declared size, which a signed body pins, before it accepts more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from audit.ledger_serde import receipt_to_proto
from audit.receipts import Receipt
from datafed.proto.v1 import common_pb2, psi_pb2, query_pb2
from datafed.psi._job import IdsColumn, PsiJob, ValuesColumns
from datafed.psi._statement import Statement

__all__ = [
    "CHUNK_BYTES",
    "PayloadInfo",
    "Receiver",
    "StepRequest",
    "blind_body",
    "download_frames",
    "intersect_reply",
    "job_from_proto",
    "job_to_proto",
    "relay_body",
    "reply_from_proto",
    "step_from_proto",
    "upload_frames",
]

#: Payload chunk size: well under every gRPC message limit on either side.
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class PayloadInfo:
    """The declared length and SHA-256 of a chunked payload."""

    size: int
    sha256: bytes

    @classmethod
    def of(cls, data: bytes) -> PayloadInfo:
        """Describe ``data``."""
        return cls(len(data), hashlib.sha256(data).digest())


@dataclass(frozen=True)
class StepRequest:
    """A decoded step request body (after its signature verified)."""

    job: PsiJob
    peer: Statement | None = None
    payload: PayloadInfo | None = None


def job_to_proto(job: PsiJob) -> psi_pb2.PsiJob:
    """Encode a job."""
    n = job.paillier_n
    return psi_pb2.PsiJob(
        job_id=job.job_id,
        ids=psi_pb2.PsiColumns(
            node=job.ids.node, dataset=job.ids.dataset, id_column=job.ids.column
        ),
        values=psi_pb2.PsiColumns(
            node=job.values.node,
            dataset=job.values.dataset,
            id_column=job.values.id_column,
            value_column=job.values.value_column,
        ),
        paillier_n=n.to_bytes((n.bit_length() + 7) // 8, "big"),
        fixed_point_bits=job.fixed_point_bits,
    )


def job_from_proto(msg: psi_pb2.PsiJob) -> PsiJob:
    """Decode and validate a job; raise ValueError naming what is wrong."""
    if msg.ids.value_column:
        raise ValueError("the ids side names no value column")
    return PsiJob(
        job_id=msg.job_id,
        ids=IdsColumn(msg.ids.node, msg.ids.dataset, msg.ids.id_column),
        values=ValuesColumns(
            msg.values.node, msg.values.dataset, msg.values.id_column, msg.values.value_column
        ),
        paillier_n=int.from_bytes(msg.paillier_n, "big"),
        fixed_point_bits=msg.fixed_point_bits,
    )


def _statement_to_proto(st: Statement) -> psi_pb2.PsiStatement:
    return psi_pb2.PsiStatement(
        certificate_pem=st.certificate_pem, body=st.body, signature=st.signature
    )


def _statement_from_proto(msg: psi_pb2.PsiStatement) -> Statement:
    return Statement(bytes(msg.certificate_pem), bytes(msg.body), bytes(msg.signature))


def _info_to_proto(info: PayloadInfo) -> psi_pb2.PsiPayloadInfo:
    return psi_pb2.PsiPayloadInfo(size=info.size, sha256=info.sha256)


def blind_body(header: common_pb2.RequestHeader, job: PsiJob) -> bytes:
    """Serialize a Blind request body (step 1).

    Parameters
    ----------
    header
        The request header (from :func:`datafed.wire.serde.header_to_proto`).
    job
        The job.

    Returns
    -------
    bytes
        The body to sign.
    """
    return psi_pb2.PsiBlindRequest(header=header, job=job_to_proto(job)).SerializeToString()


def relay_body(
    step: str, header: common_pb2.RequestHeader, job: PsiJob, peer: Statement, payload: bytes
) -> bytes:
    """Serialize an Exchange (step 2) or Intersect (step 3) request body.

    Parameters
    ----------
    step
        ``"exchange"`` or ``"intersect"``.
    header
        The request header.
    job
        The job.
    peer
        The other node's statement, relayed.
    payload
        The bulk data that follows as chunks.

    Returns
    -------
    bytes
        The body to sign.
    """
    cls = {"exchange": psi_pb2.PsiExchangeRequest, "intersect": psi_pb2.PsiIntersectRequest}
    if step not in cls:
        raise ValueError(f"step must be 'exchange' or 'intersect', got {step!r}")
    msg = cls[step](
        header=header,
        job=job_to_proto(job),
        peer=_statement_to_proto(peer),
        payload=_info_to_proto(PayloadInfo.of(payload)),
    )
    return msg.SerializeToString()


def step_from_proto(
    msg: psi_pb2.PsiBlindRequest | psi_pb2.PsiExchangeRequest | psi_pb2.PsiIntersectRequest,
) -> StepRequest:
    """Decode a parsed step request body; raise ValueError naming what is wrong."""
    job = job_from_proto(msg.job)
    if isinstance(msg, psi_pb2.PsiBlindRequest):
        return StepRequest(job)
    if not msg.HasField("peer") or not msg.HasField("payload"):
        raise ValueError("the request relays no peer statement or payload description")
    if len(msg.payload.sha256) != 32:
        raise ValueError("payload sha256 must be 32 bytes")
    info = PayloadInfo(msg.payload.size, bytes(msg.payload.sha256))
    return StepRequest(job, _statement_from_proto(msg.peer), info)


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), CHUNK_BYTES):
        yield bytes(view[i : i + CHUNK_BYTES])


def upload_frames(signed: common_pb2.SignedRequest, payload: bytes) -> Iterator[psi_pb2.PsiUpload]:
    """The frames of an upload: the signed request, then the payload in chunks."""
    yield psi_pb2.PsiUpload(request=signed)
    for c in _chunks(payload):
        yield psi_pb2.PsiUpload(chunk=c)


def download_frames(
    node: str,
    job_id: str,
    statement: Statement,
    ledger: query_pb2.LedgerHead,
    payload: bytes,
    receipt: Receipt | None = None,
) -> Iterator[psi_pb2.PsiDownload]:
    """The frames of a step reply: the reply with the statement, then the payload chunks."""
    reply = psi_pb2.PsiStepReply(
        node=node,
        job_id=job_id,
        statement=_statement_to_proto(statement),
        payload=_info_to_proto(PayloadInfo.of(payload)),
        ledger=ledger,
    )
    if receipt is not None:
        reply.receipt.CopyFrom(receipt_to_proto(receipt))
    yield psi_pb2.PsiDownload(reply=reply)
    for c in _chunks(payload):
        yield psi_pb2.PsiDownload(chunk=c)


def reply_from_proto(msg: psi_pb2.PsiStepReply) -> tuple[Statement, PayloadInfo]:
    """Decode a step reply's statement and payload description."""
    return _statement_from_proto(msg.statement), PayloadInfo(
        msg.payload.size, bytes(msg.payload.sha256)
    )


def intersect_reply(
    node: str,
    job_id: str,
    size: int,
    encrypted_sum: bytes,
    ledger: query_pb2.LedgerHead,
    receipt: Receipt,
) -> psi_pb2.PsiIntersectReply:
    """Build the Intersect reply."""
    return psi_pb2.PsiIntersectReply(
        node=node,
        job_id=job_id,
        intersection_size=size,
        encrypted_sum=encrypted_sum,
        ledger=ledger,
        receipt=receipt_to_proto(receipt),
    )


class Receiver:
    """Collects payload chunks up to a declared size, then checks the SHA-256.

    Parameters
    ----------
    info
        The declared size and digest.
    limit
        The most bytes the receiver accepts at all.
    """

    def __init__(self, info: PayloadInfo, limit: int) -> None:
        if info.size > limit:
            raise ValueError(f"payload of {info.size} bytes exceeds the limit of {limit}")
        self.info = info
        self._buf = bytearray()

    def add(self, chunk: bytes) -> None:
        """Append one chunk; raise ValueError past the declared size."""
        if len(self._buf) + len(chunk) > self.info.size:
            raise ValueError(f"payload is longer than the declared {self.info.size} bytes")
        self._buf += chunk

    def finish(self) -> bytes:
        """Return the payload; raise ValueError if it is short or its digest differs."""
        if len(self._buf) != self.info.size:
            raise ValueError(
                f"payload is {len(self._buf)} bytes, the request declared {self.info.size}"
            )
        data = bytes(self._buf)
        if hashlib.sha256(data).digest() != self.info.sha256:
            raise ValueError("payload does not match its declared SHA-256")
        return data
