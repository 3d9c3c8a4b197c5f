"""Sign-off at a node: granting approvals to others, checking approvals for its own data."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from datafed.errors import SignatureError
from datafed.pki import Identity
from datafed.proto.v1 import common_pb2, query_pb2
from datafed.query.spec import QuerySpec
from datafed.signing import RequestHeader, now_ms
from datafed.signoff import sign_statement, verify_signoff
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, PermissionDenied

__all__ = ["SIGNOFF_LIFETIME_MS", "check_signoffs", "grant_signoff", "parse_signoff_request"]

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
    ctx: NodeContext, identity: Identity, header: RequestHeader, body: query_pb2.SignOffRequestBody
) -> query_pb2.SignOff:
    """Sign off if one of this node's grants covers the use; else raise PermissionDenied."""
    if identity.role != "analyst":
        raise PermissionDenied(f"role {identity.role!r} may not ask for sign-off")
    for g in ctx.config.signoff:
        if (
            g.node == body.target_node
            and body.dataset in g.datasets
            and identity.name in g.requesters
            and header.purpose in g.purposes
        ):
            statement = query_pb2.SignOffStatement(
                approver=ctx.name,
                target_node=body.target_node,
                dataset=body.dataset,
                requester=identity.name,
                purpose=header.purpose,
                job_id=header.job_id,
                expires_at_ms=now_ms() + SIGNOFF_LIFETIME_MS,
            )
            return sign_statement(statement, ctx.signing_key, ctx.tls.cert)
    raise PermissionDenied(
        f"{ctx.name} does not sign off {identity.name!r} using "
        f"{body.target_node}/{body.dataset} for purpose {header.purpose!r}"
    )


def check_signoffs(
    ctx: NodeContext,
    header: RequestHeader,
    spec: QuerySpec,
    signoffs: Sequence[query_pb2.SignOff],
) -> dict[str, str]:
    """Verify the approvals a dataset requires; return ledger details naming them."""
    ds = ctx.config.dataset(spec.dataset)
    required = set(ds.policy.required_signoff) if ds is not None else set()
    if len(signoffs) > MAX_SIGNOFFS:
        raise InvalidRequest(f"at most {MAX_SIGNOFFS} sign-offs per request")
    found: dict[str, str] = {}
    now = now_ms()
    for so in signoffs:
        try:
            v = verify_signoff(so, ctx.tls.ca)
        except SignatureError as exc:
            raise PermissionDenied("a sign-off does not verify") from exc
        s = v.statement
        if (s.target_node, s.dataset, s.requester, s.purpose, s.job_id) != (
            ctx.name,
            spec.dataset,
            header.requester,
            header.purpose,
            header.job_id,
        ):
            raise PermissionDenied(f"the sign-off by {v.approver!r} is for another use")
        if s.expires_at_ms <= now:
            raise PermissionDenied(f"the sign-off by {v.approver!r} has expired")
        found[v.approver] = hashlib.sha256(bytes(so.statement)).hexdigest()
    missing = sorted(required - set(found))
    if missing:
        raise PermissionDenied(f"dataset {spec.dataset!r} needs sign-off by {', '.join(missing)}")
    return {f"signoff:{a}": d for a, d in sorted(found.items()) if a in required}
