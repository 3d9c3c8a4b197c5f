"""Signed requests: Ed25519 over a domain-separated body, with nonce and validity window.

The signed bytes are ``REQUEST_CONTEXT || body`` where ``body`` is the serialized request
exactly as sent; the receiver verifies those bytes before it parses them, so no
re-serialization ambiguity arises.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import SignatureError

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "MAX_LIFETIME_MS",
    "NONCE_BYTES",
    "REQUEST_CONTEXT",
    "RequestHeader",
    "new_header",
    "now_ms",
    "sign_body",
    "verify_body",
]

#: Domain separation tag: a signature over a request can never be replayed as a
#: checkpoint or cosignature signature, whose texts start differently.
REQUEST_CONTEXT = b"datafed/v1/signed-request\x00"
NONCE_BYTES = 16
DEFAULT_LIFETIME_MS = 120_000
#: A node refuses requests valid for longer than this, bounding its replay cache.
MAX_LIFETIME_MS = 600_000


@dataclass(frozen=True)
class RequestHeader:
    """Who asks which node for what, with replay protection."""

    requester: str
    node: str
    job_id: str
    nonce: bytes
    issued_at_ms: int
    expires_at_ms: int
    purpose: str
    legal_basis: str = ""


def now_ms() -> int:
    """Return the current wall-clock time in milliseconds."""
    return time.time_ns() // 1_000_000


def new_header(
    requester: str,
    node: str,
    job_id: str,
    purpose: str,
    legal_basis: str = "",
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
) -> RequestHeader:
    """Build a header with a fresh random nonce and a validity window starting now."""
    if not 0 < lifetime_ms <= MAX_LIFETIME_MS:
        raise ValueError(f"lifetime_ms must be in (0, {MAX_LIFETIME_MS}], got {lifetime_ms}")
    issued = now_ms()
    return RequestHeader(
        requester=requester,
        node=node,
        job_id=job_id,
        nonce=secrets.token_bytes(NONCE_BYTES),
        issued_at_ms=issued,
        expires_at_ms=issued + lifetime_ms,
        purpose=purpose,
        legal_basis=legal_basis,
    )


def sign_body(body: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """Sign a serialized request body."""
    return key.sign(REQUEST_CONTEXT + body)


def verify_body(body: bytes, signature: bytes, key: ed25519.Ed25519PublicKey) -> None:
    """Verify a request body's signature; raise :class:`SignatureError` if it fails."""
    try:
        key.verify(signature, REQUEST_CONTEXT + body)
    except InvalidSignature as exc:
        raise SignatureError from exc
