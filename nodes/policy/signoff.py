"""Sign-off at a node: granting approvals to others, checking approvals of its own data.

A dataset's policy may require approval by named agencies (``required_signoff``). The
approver's node grants one only if one of its ``[[signoff]]`` grants covers the target
node, dataset, requester and purpose, and it binds the approval to the *job statement*
it was shown (its digest): one sign-off approves exactly one query -- that spec, that
protection, that roster -- and the target node admits each job id once, so a sign-off is
single use (``docs/policy.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import SignatureError
from datafed.pki.ca import Identity
from datafed.proto.v1 import common_pb2, query_pb2
from datafed.wire.signing import RequestHeader, now_ms
from datafed.wire.signoff import sign_signoff, verify_signoff
from datafed.wire.statement import SignedJobStatement
from nodes.config import NodeConfig
from nodes.errors import InvalidRequest, PermissionDenied

__all__ = [
    "MAX_SIGNOFFS",
    "SIGNOFF_LIFETIME_MS",
    "Signer",
    "check_signoffs",
    "grant_signoff",
    "parse_signoff_request",
]


@dataclass(frozen=True)
class Signer:
    """A node signing as an approver: its name, Ed25519 key and certificate (PEM)."""

    name: str
    key: ed25519.Ed25519PrivateKey
    cert: bytes


#: How long a granted sign-off stays valid.
SIGNOFF_LIFETIME_MS = 600_000
MAX_SIGNOFFS = 16


def parse_signoff_request(
    body: bytes,
) -> tuple[common_pb2.RequestHeader, query_pb2.SignOffRequestBody]:
    """Parse a signed sign-off request body (after its signature verified)."""
    msg = query_pb2.SignOffRequestBody.FromString(body)
    return msg.header, msg


def grant_signoff(
    config: NodeConfig,
    signer: Signer,
    identity: Identity,
    header: RequestHeader,
    body: query_pb2.SignOffRequestBody,
    statement: SignedJobStatement,
) -> query_pb2.SignOff:
    """Sign off one job if one of this node's grants covers it; else raise PermissionDenied.

    Parameters
    ----------
    signer
        This (the approving) node: its name, signing key and certificate.
    statement
        The job statement the analyst asks approval for (already verified).
    """
    name = signer.name
    if identity.role != "analyst":
        raise PermissionDenied(f"role {identity.role!r} may not ask for sign-off")
    st = statement.statement
    if (st.requester, st.purpose, st.job_id, st.dataset) != (
        identity.name,
        header.purpose,
        header.job_id,
        body.dataset,
    ) or body.target_node not in st.roster:
        raise InvalidRequest("the sign-off request does not match its job statement")
    for g in config.signoff:
        if (
            g.node == body.target_node
            and body.dataset in g.datasets
            and identity.name in g.requesters
            and header.purpose in g.purposes
        ):
            approval = query_pb2.SignOffStatement(
                approver=name,
                target_node=body.target_node,
                dataset=body.dataset,
                requester=identity.name,
                purpose=header.purpose,
                job_id=header.job_id,
                expires_at_ms=now_ms() + SIGNOFF_LIFETIME_MS,
                statement_digest=bytes.fromhex(statement.digest),
            )
            return sign_signoff(approval, signer.key, signer.cert)
    raise PermissionDenied(
        f"{name} does not sign off {identity.name!r} using "
        f"{body.target_node}/{body.dataset} for purpose {header.purpose!r}"
    )


def check_signoffs(
    node: str,
    ca_pem: bytes,
    required: Sequence[str],
    statement: SignedJobStatement,
    signoffs: Sequence[query_pb2.SignOff],
) -> dict[str, str]:
    """Verify the approvals a dataset requires for this job; return ledger details naming them.

    Every sign-off must verify, be for this node, dataset, requester, purpose and job, and
    bind this job's statement digest; it must not have expired.
    """
    if len(signoffs) > MAX_SIGNOFFS:
        raise InvalidRequest(f"at most {MAX_SIGNOFFS} sign-offs per request")
    st = statement.statement
    found: dict[str, str] = {}
    now = now_ms()
    for so in signoffs:
        try:
            v = verify_signoff(so, ca_pem)
        except SignatureError as exc:
            raise PermissionDenied("a sign-off does not verify") from exc
        s = v.statement
        if (s.target_node, s.dataset, s.requester, s.purpose, s.job_id) != (
            node,
            st.dataset,
            st.requester,
            st.purpose,
            st.job_id,
        ) or bytes(s.statement_digest).hex() != statement.digest:
            raise PermissionDenied(f"the sign-off by {v.approver!r} is for another use")
        if s.expires_at_ms <= now:
            raise PermissionDenied(f"the sign-off by {v.approver!r} has expired")
        found[v.approver] = hashlib.sha256(bytes(so.statement)).hexdigest()
    missing = sorted(set(required) - set(found))
    if missing:
        raise PermissionDenied(f"dataset {st.dataset!r} needs sign-off by {', '.join(missing)}")
    return {f"signoff:{a}": d for a, d in sorted(found.items()) if a in required}
