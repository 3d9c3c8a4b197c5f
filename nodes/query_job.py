"""A query as the node receives it: spec, protection and job statement, checked together.

:func:`decode_query` turns a signed query body into a :class:`QueryJob` -- or refuses it
before anything is recorded as approved -- and checks the job statement against what the
node was actually sent: the statement names this node, its requester, job, purpose and
legal basis are the header's, its spec and protection digests are those of the spec and
protection in the body, and it has not expired. The roster's size against the dataset's
``min_participants`` is a policy rule (:mod:`nodes.policy.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from datafed.errors import QueryError, SignatureError
from datafed.modes import ProtectionMode, mode_class
from datafed.proto.v1 import common_pb2, query_pb2
from datafed.query.spec import QuerySpec, Scalar
from datafed.serde import literal_from_proto, spec_from_proto
from datafed.signing import MAX_LIFETIME_MS, now_ms
from datafed.statement import SignedJobStatement, message_digest, open_job_statement
from nodes.errors import InvalidRequest, Unauthenticated
from nodes.gate import CLOCK_SKEW_MS
from nodes.policy import Use
from nodes.rpc import SignedCall

__all__ = ["MAX_DOMAIN", "QueryJob", "decode_query", "parse_query"]

#: Most group keys a protected GROUP BY may declare.
MAX_DOMAIN = 10_000


@dataclass(frozen=True)
class QueryJob:
    """One admitted-to-be query: what to compute, how to protect it, under which statement."""

    spec: QuerySpec
    mode: type[ProtectionMode]
    fixed_point_bits: int
    params: bytes
    domain: list[tuple[Scalar | None, ...]] | None
    statement: SignedJobStatement
    use: Use


def parse_query(body: bytes) -> tuple[common_pb2.RequestHeader, query_pb2.QueryRequestBody]:
    """Parse a signed query body (after its signature verified)."""
    msg = query_pb2.QueryRequestBody.FromString(body)
    return msg.header, msg


def decode_query(node: str, call: SignedCall, body: query_pb2.QueryRequestBody) -> QueryJob:
    """Decode and cross-check a query; raise InvalidRequest/Unauthenticated to refuse it."""
    assert call.identity is not None and call.header is not None
    try:
        spec = spec_from_proto(body.spec)
    except QueryError as exc:
        raise InvalidRequest(str(exc)) from exc
    call.dataset = spec.dataset
    mode, domain = _protection(body.protection, spec)
    if not body.HasField("statement"):
        raise InvalidRequest("a query must carry its job statement")
    try:
        statement = open_job_statement(body.statement, call.identity.signing_key)
    except SignatureError as exc:
        raise Unauthenticated("the job statement does not verify") from exc
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    call.details["statement"] = statement.digest
    _match(node, call, body, statement)
    use = Use(
        operation="query",
        requester=call.identity,
        header=call.header,
        dataset=spec.dataset,
        columns=frozenset(spec.columns()),
        protection=mode.name,
        spec=spec,
        statement=statement,
        signoffs=list(body.sign_offs),
    )
    return QueryJob(
        spec,
        mode,
        body.protection.fixed_point_bits,
        bytes(body.protection.params),
        domain,
        statement,
        use,
    )


def _protection(
    msg: query_pb2.Protection, spec: QuerySpec
) -> tuple[type[ProtectionMode], list[tuple[Scalar | None, ...]] | None]:
    try:
        mode = mode_class(msg.mode)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if msg.fixed_point_bits > 32:
        raise InvalidRequest(f"fixed_point_bits must be in [0, 32], got {msg.fixed_point_bits}")
    if len(msg.domain) > MAX_DOMAIN:
        raise InvalidRequest(f"group domain larger than {MAX_DOMAIN}")
    domain = [tuple(literal_from_proto(v) for v in k.values) for k in msg.domain] or None
    if domain is not None and any(len(k) != len(spec.group_by) for k in domain):
        raise InvalidRequest("group domain keys do not match GROUP BY")
    if domain is None and spec.group_by and mode.hides_groups:
        raise InvalidRequest(f"protection {mode.name!r} with GROUP BY needs a group domain")
    return mode, domain


def _match(
    node: str, call: SignedCall, body: query_pb2.QueryRequestBody, signed: SignedJobStatement
) -> None:
    """The statement must describe exactly the request this node received."""
    st, h = signed.statement, call.header
    assert h is not None
    same = (
        (st.job_id, st.requester, st.purpose, st.legal_basis, st.operation)
        == (h.job_id, h.requester, h.purpose, h.legal_basis, "query")
        and st.dataset == body.spec.dataset
        and st.spec_digest == message_digest(body.spec)
        and st.protection == body.protection.mode
        and st.protection_digest == message_digest(body.protection)
    )
    if not same:
        raise InvalidRequest("the request does not match its job statement")
    if node not in st.roster:
        raise InvalidRequest(f"the job statement does not name node {node!r}")
    now = now_ms()
    if st.issued_at_ms > now + CLOCK_SKEW_MS:
        raise Unauthenticated("the job statement was issued in the future (check the clocks)")
    if now >= st.expires_at_ms:
        raise Unauthenticated("the job statement has expired")
    if st.expires_at_ms - st.issued_at_ms > MAX_LIFETIME_MS:
        raise Unauthenticated(f"a job statement is valid for at most {MAX_LIFETIME_MS // 1000}s")
