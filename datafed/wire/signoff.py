"""Sign-off: another agency's signed approval of one use of a dataset.

A dataset's policy may require approval by named agencies (``required_signoff``).  The
analyst asks each approver's node (:rpc:`GrantSignOff`); the approver checks its own
grants, records the decision in its ledger and, if it agrees, signs a
:class:`SignOffStatement` binding the approver, the target node and dataset, the
requester, the purpose, the job and an expiry.  The analyst attaches the statements to
its query; the target node verifies each one (certificate from the federation CA,
signature, every field) and records them with its own decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import DecodeError

from datafed.errors import PkiError, SignatureError
from datafed.pki.peers import verify_peer
from datafed.proto.v1 import query_pb2

__all__ = ["SIGNOFF_CONTEXT", "VerifiedSignOff", "sign_signoff", "verify_signoff"]

#: Domain separation: a sign-off signature can never pass as a request or checkpoint.
SIGNOFF_CONTEXT = b"datafed/v1/sign-off\x00"


@dataclass(frozen=True)
class VerifiedSignOff:
    """A sign-off whose certificate and signature verified."""

    approver: str
    statement: query_pb2.SignOffStatement


def sign_signoff(
    statement: query_pb2.SignOffStatement, key: ed25519.Ed25519PrivateKey, cert_pem: bytes
) -> query_pb2.SignOff:
    """Sign a statement as its approver."""
    raw = statement.SerializeToString(deterministic=True)
    return query_pb2.SignOff(
        statement=raw, signature=key.sign(SIGNOFF_CONTEXT + raw), approver_certificate=cert_pem
    )


def verify_signoff(signoff: query_pb2.SignOff, ca_pem: bytes) -> VerifiedSignOff:
    """Check the approver's certificate and signature; raise :class:`SignatureError`."""
    try:
        identity = verify_peer(bytes(signoff.approver_certificate), ca_pem)
        identity.signing_key.verify(
            bytes(signoff.signature), SIGNOFF_CONTEXT + bytes(signoff.statement)
        )
        statement = query_pb2.SignOffStatement.FromString(bytes(signoff.statement))
    except (PkiError, InvalidSignature, DecodeError) as exc:
        raise SignatureError from exc
    if statement.approver != identity.name:
        raise SignatureError
    return VerifiedSignOff(approver=identity.name, statement=statement)
