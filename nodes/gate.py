"""The gate every signed request passes: peer certificate, signature, header, replay.

Nothing here touches a dataset.  The servicer records the outcome (approved or denied)
in the ledger before any data is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError

from datafed.errors import PkiError, SignatureError
from datafed.pki.ca import Identity, identity_from_pem
from datafed.pki.crl import check_not_revoked
from datafed.proto.v1 import common_pb2
from datafed.wire.serde import header_from_proto
from datafed.wire.signing import MAX_LIFETIME_MS, NONCE_BYTES, RequestHeader, verify_body
from nodes.errors import InvalidRequest, Unauthenticated
from nodes.replay import NonceStore

__all__ = [
    "CLOCK_SKEW_MS",
    "Context",
    "certificate_identity",
    "open_signed",
    "peer_identity",
    "request_digest",
]

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Tolerated difference between the caller's clock and ours.
CLOCK_SKEW_MS = 30_000
M = TypeVar("M")
#: What a servicer method is handed with each request (grpc.aio's servicer context).
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def peer_identity(context: Context) -> Identity:
    """Return the identity from the TLS client certificate, or raise Unauthenticated."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise Unauthenticated("no client certificate")
    try:
        return identity_from_pem(check_not_revoked(pems[0]))
    except PkiError as exc:
        raise Unauthenticated(str(exc)) from exc


def certificate_identity(context: Context) -> Identity | None:
    """Whom the TLS client certificate names, revoked or not (``None``: no datafed certificate).

    Known from the headers on: what a node's capacity is shared by (:mod:`nodes.intercept`)
    and whom a refusal for capacity names. Not an authentication: :func:`peer_identity`
    is, and every handler still calls it.
    """
    pems = context.auth_context().get("x509_pem_cert") or []
    try:
        return identity_from_pem(pems[0]) if pems else None
    except PkiError:
        return None


def request_digest(signed: common_pb2.SignedRequest) -> str:
    """Hex SHA-256 of the signed body bytes (what the ledger records)."""
    return hashlib.sha256(signed.body).hexdigest()


def open_signed(
    signed: common_pb2.SignedRequest,
    identity: Identity,
    node_name: str,
    nonces: NonceStore,
    now_ms: int,
    parse: Callable[[bytes], tuple[common_pb2.RequestHeader, M]],
) -> tuple[RequestHeader, M]:
    """Verify and parse a signed request from ``identity``.

    Parameters
    ----------
    parse
        Parses the body bytes and returns ``(header_message, body_message)``; it
        runs only on bytes whose signature verified.

    Raises
    ------
    Unauthenticated
        Bad signature, a requester that is not the certificate's, expired or replayed.
    InvalidRequest
        A malformed body or header, or a request addressed to another node.
    """
    try:
        verify_body(signed.body, signed.signature, identity.signing_key)
    except SignatureError as exc:
        raise Unauthenticated("request signature does not verify") from exc
    try:
        header_msg, body = parse(signed.body)
    except DecodeError as exc:
        raise InvalidRequest("malformed request body") from exc
    header = header_from_proto(header_msg)
    if header.requester != identity.name:
        raise Unauthenticated(
            f"request names requester {header.requester!r} but the certificate is {identity.name!r}"
        )
    if header.node != node_name:
        raise InvalidRequest(f"request is addressed to node {header.node!r}, not {node_name!r}")
    if len(header.nonce) != NONCE_BYTES:
        raise InvalidRequest(f"nonce must be {NONCE_BYTES} bytes")
    if not _JOB_ID.fullmatch(header.job_id):
        raise InvalidRequest("job_id must be 1-128 letters, digits or '.', '_', ':', '-'")
    if not 0 < len(header.purpose) <= 256 or not header.purpose.isprintable():
        raise InvalidRequest("purpose must be 1-256 printable characters")
    if len(header.legal_basis) > 1024 or not header.legal_basis.isprintable():
        raise InvalidRequest("legal_basis must be at most 1024 printable characters")
    if header.expires_at_ms <= now_ms:
        raise Unauthenticated("request expired")
    if header.issued_at_ms > now_ms + CLOCK_SKEW_MS:
        raise Unauthenticated("request issued in the future (check the clocks)")
    if header.expires_at_ms - header.issued_at_ms > MAX_LIFETIME_MS:
        raise Unauthenticated(f"request validity exceeds {MAX_LIFETIME_MS // 1000}s")
    if not nonces.claim(identity.name, header.nonce, header.expires_at_ms, now_ms):
        raise Unauthenticated("request replayed (nonce already used)")
    return header, body
