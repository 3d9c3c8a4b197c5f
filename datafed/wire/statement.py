"""One job, one statement: what every participant of a protected query receives and records.

The analyst describes the whole job once -- requester, purpose, the digest of the spec,
the protection and the digest of its parameters, the roster of participating nodes, an
expiry -- signs it with the Ed25519 key bound in its certificate, and sends the *same
bytes* to every node of the roster inside its per-node signed request. A node admits the
job only if the statement names it, its roster is at least the dataset's
``min_participants``, and the spec and protection it was sent hash to the statement's
digests; it records the statement's digest in its ledger and binds its payload to it.
So an analyst that sends different specs (or rosters, or keys) to different nodes needs
different statements, whose digests differ: the payloads do not combine (garbage or a
refusal, never one node's value), and ``datafed-audit reconcile`` shows the mismatch.
See ``docs/invisibility.md``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError, Message

from datafed.errors import SignatureError
from datafed.proto.v1 import common_pb2
from datafed.wire.fields import from_message, to_message
from datafed.wire.signing import now_ms

__all__ = [
    "MAX_ROSTER",
    "STATEMENT_CONTEXT",
    "JobStatement",
    "SignedJobStatement",
    "message_digest",
    "new_job_id",
    "open_job_statement",
    "sign_job_statement",
]

#: Domain separation: a statement signature never passes as a request or checkpoint one.
STATEMENT_CONTEXT = b"datafed/v1/job-statement\x00"
#: Most nodes one job may name (as many as a protected query may span).
MAX_ROSTER = 64


def new_job_id(prefix: str = "job") -> str:
    """A fresh random job id: ``prefix``, a dash and 16 hex digits (``job-…``, ``fl-…``).

    Nodes admit each job id once per requester, so every job needs a new one.
    """
    return f"{prefix}-{secrets.token_hex(8)}"


def message_digest(msg: Message) -> bytes:
    """SHA-256 of a message's deterministic encoding (what statements commit to)."""
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).digest()


@dataclass(frozen=True)
class JobStatement:
    """The description of one job that every participant receives (see module docs)."""

    job_id: str
    requester: str
    purpose: str
    operation: str
    dataset: str
    spec_digest: bytes
    protection: str
    protection_digest: bytes
    roster: tuple[str, ...]
    issued_at_ms: int
    expires_at_ms: int
    legal_basis: str = ""

    def to_proto(self) -> common_pb2.JobStatement:
        """The wire form."""
        return to_message(common_pb2.JobStatement, self)

    @classmethod
    def from_proto(cls, msg: common_pb2.JobStatement) -> JobStatement:
        """Parse the wire form; ValueError if a field is out of range."""
        roster = tuple(msg.roster)
        if not 1 <= len(roster) <= MAX_ROSTER or len(set(roster)) != len(roster):
            raise ValueError(f"a roster names 1-{MAX_ROSTER} distinct nodes")
        if len(msg.spec_digest) != 32 or len(msg.protection_digest) != 32:
            raise ValueError("statement digests must be 32 bytes")
        return from_message(cls, msg, roster=roster)


@dataclass(frozen=True)
class SignedJobStatement:
    """A statement with its exact signed bytes and the requester's signature."""

    statement: JobStatement
    raw: bytes
    signature: bytes

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the signed bytes: what every participant records."""
        return hashlib.sha256(self.raw).hexdigest()

    def to_proto(self) -> common_pb2.SignedStatement:
        """The wire form."""
        return common_pb2.SignedStatement(statement=self.raw, signature=self.signature)


def sign_job_statement(
    key: ed25519.Ed25519PrivateKey,
    *,
    job_id: str,
    requester: str,
    purpose: str,
    operation: str,
    dataset: str,
    spec: Message,
    protection: str,
    protection_msg: Message,
    roster: Sequence[str],
    lifetime_ms: int,
    legal_basis: str = "",
) -> SignedJobStatement:
    """Describe a job and sign it with the requester's key."""
    issued = now_ms()
    statement = JobStatement(
        job_id=job_id,
        requester=requester,
        purpose=purpose,
        operation=operation,
        dataset=dataset,
        spec_digest=message_digest(spec),
        protection=protection,
        protection_digest=message_digest(protection_msg),
        roster=tuple(roster),
        issued_at_ms=issued,
        expires_at_ms=issued + lifetime_ms,
        legal_basis=legal_basis,
    )
    raw = statement.to_proto().SerializeToString(deterministic=True)
    return SignedJobStatement(statement, raw, key.sign(STATEMENT_CONTEXT + raw))


def open_job_statement(
    msg: common_pb2.SignedStatement, key: ed25519.Ed25519PublicKey
) -> SignedJobStatement:
    """Verify a signed statement with the requester's key and parse it.

    Raises
    ------
    SignatureError
        If the signature does not verify (detail-free).
    ValueError
        If the statement is malformed.
    """
    raw = bytes(msg.statement)
    try:
        key.verify(bytes(msg.signature), STATEMENT_CONTEXT + raw)
    except InvalidSignature as exc:
        raise SignatureError from exc
    try:
        statement = JobStatement.from_proto(common_pb2.JobStatement.FromString(raw))
    except DecodeError as exc:
        raise ValueError("malformed job statement") from exc
    return SignedJobStatement(statement, raw, bytes(msg.signature))
