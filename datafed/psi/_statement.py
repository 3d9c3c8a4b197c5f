"""Signed statements: how two nodes that never connect authenticate what the analyst relays.

A node that produces bulk data for its peer (blinded points, a sealed box) signs a short
statement that pins the job (its digest), the step, the sizes and the SHA-256 of the
payload, with the Ed25519 key bound into its CA-issued certificate.  The peer checks the
certificate against the federation CA (issuer signature, validity, role ``node``, the name
the job expects) and the signature before it reads one byte of the payload, so a
relaying analyst can neither forge nor swap what it carries.

The body has a canonical binary encoding (no protobuf) so that its bytes, and therefore
the signature, do not depend on a serializer::

    body = lp(node) || lp(job_id) || lp(job_digest) || lp(step) || u64(count) || u64(pairs)
           || lp(payload_digest) || lp(recipient_key) || lp(peer_digest) || u64(min_intersection)
           [ || u64(dp_sensitivity) || lp(dp_epsilon) ]

with ``lp(x) = u32(len(x)) || x`` and big-endian integers.  The bracketed trailer is present
only when the node's policy requires differential privacy (``dp_sensitivity > 0``): the
values node states the clamp bound of its values (fixed point) and its epsilon per
operation (decimal text) so the ids node can calibrate the noise (see
:mod:`datafed.psi._dp`); bodies without it encode exactly as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import PkiError
from datafed.pki.peers import verify_peer
from datafed.psi.errors import InvalidPsiMessage

__all__ = ["STATEMENT_CONTEXT", "Statement", "StatementBody", "sign_statement", "verify_statement"]

#: Domain separation: a statement signature can never pass as a request or checkpoint one.
STATEMENT_CONTEXT = b"datafed/v1/psi-statement\x00"
_MAX_FIELD = 4096
Step = Literal["blind", "exchange"]


@dataclass(frozen=True)
class StatementBody:
    """What a node states about the payload it produced for one job step."""

    node: str
    job_id: str
    job_digest: bytes
    step: Step
    count: int
    payload_digest: bytes
    pairs: int = 0
    recipient_key: bytes = b""
    peer_digest: bytes = b""
    min_intersection: int = 0
    dp_sensitivity: int = 0
    dp_epsilon: str = ""

    def encode(self) -> bytes:
        """Return the canonical encoding (see the module docstring).

        Returns
        -------
        bytes
            The body bytes that get signed.
        """

        def lp(x: bytes) -> bytes:
            return len(x).to_bytes(4, "big") + x

        def u64(v: int) -> bytes:
            return v.to_bytes(8, "big")

        return b"".join(
            (
                lp(self.node.encode()),
                lp(self.job_id.encode()),
                lp(self.job_digest),
                lp(self.step.encode()),
                u64(self.count),
                u64(self.pairs),
                lp(self.payload_digest),
                lp(self.recipient_key),
                lp(self.peer_digest),
                u64(self.min_intersection),
                u64(self.dp_sensitivity) + lp(self.dp_epsilon.encode())
                if self.dp_sensitivity
                else b"",
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> StatementBody:
        """Parse a canonical body; raise :class:`InvalidPsiMessage` if it is malformed.

        Parameters
        ----------
        data
            Body bytes whose signature was verified.

        Returns
        -------
        StatementBody
            The statement.
        """
        reader = _Reader(data)
        node, job_id, job_digest, step = (reader.field() for _ in range(4))
        count, pairs = reader.u64(), reader.u64()
        payload_digest, recipient_key, peer_digest = (reader.field() for _ in range(3))
        min_intersection = reader.u64()
        sensitivity, epsilon = 0, b""
        if reader.pos < len(reader.data):
            sensitivity, epsilon = reader.u64(), reader.field()
            if not sensitivity:
                raise InvalidPsiMessage
        reader.end()
        if step not in (b"blind", b"exchange"):
            raise InvalidPsiMessage
        try:
            return cls(
                node=node.decode(),
                job_id=job_id.decode(),
                job_digest=job_digest,
                step="blind" if step == b"blind" else "exchange",
                count=count,
                payload_digest=payload_digest,
                pairs=pairs,
                recipient_key=recipient_key,
                peer_digest=peer_digest,
                min_intersection=min_intersection,
                dp_sensitivity=sensitivity,
                dp_epsilon=epsilon.decode(),
            )
        except UnicodeDecodeError as exc:
            raise InvalidPsiMessage from exc


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        if n > _MAX_FIELD or self.pos + n > len(self.data):
            raise InvalidPsiMessage
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def field(self) -> bytes:
        return self._take(int.from_bytes(self._take(4), "big"))

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise InvalidPsiMessage


@dataclass(frozen=True)
class Statement:
    """A signed statement as it travels: the signer's certificate, the body, the signature."""

    certificate_pem: bytes
    body: bytes
    signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the body bytes (what an answering statement points back to)."""
        return hashlib.sha256(self.body).digest()


def sign_statement(
    body: StatementBody, certificate_pem: bytes, key: ed25519.Ed25519PrivateKey
) -> Statement:
    """Sign ``body`` with the node's key.

    Parameters
    ----------
    body
        The statement.
    certificate_pem
        The node's own certificate, which binds the key's public half.
    key
        The node's Ed25519 signing key.

    Returns
    -------
    Statement
        The signed statement.
    """
    data = body.encode()
    return Statement(certificate_pem, data, key.sign(STATEMENT_CONTEXT + data))


def _check_certificate(pem: bytes, ca_pem: bytes, node: str) -> ed25519.Ed25519PublicKey:
    identity = verify_peer(pem, ca_pem, role="node")  # issuer, validity window, role
    if identity.name != node:
        raise ValueError("certificate is not the expected node's")
    return identity.signing_key


def verify_statement(
    statement: Statement, ca_pem: bytes, *, node: str, job_id: str, step: Step
) -> StatementBody:
    """Check a relayed statement and return its body.

    Parameters
    ----------
    statement
        The statement as relayed.
    ca_pem
        The federation CA certificate (the verifier's own copy).
    node
        The node that must have signed it (from the job).
    job_id, step
        The job and step it must be about.

    Returns
    -------
    StatementBody
        The verified body.

    Raises
    ------
    InvalidPsiMessage
        If the certificate, the signature or the body does not check out.
    """
    try:
        key = _check_certificate(statement.certificate_pem, ca_pem, node)
        key.verify(statement.signature, STATEMENT_CONTEXT + statement.body)
    except (ValueError, TypeError, InvalidSignature, PkiError) as exc:
        raise InvalidPsiMessage from exc
    body = StatementBody.decode(statement.body)
    if body.node != node or body.job_id != job_id or body.step != step:
        raise InvalidPsiMessage
    return body
