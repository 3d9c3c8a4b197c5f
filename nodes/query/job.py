"""A query as the node receives it: spec, protection and job statement, checked together.

:func:`open_query` is the whole of it, blocking and meant to run off the event loop (a
large request must never stall the node): it opens the signed request, refuses fields
larger than ``[limits]`` allow before decoding them, decodes (:func:`decode_query`) and
estimates the cost (:mod:`nodes.limits`) -- all before anything is recorded as approved.

:func:`decode_query` turns a signed query body into a :class:`QueryJob` and checks the
job statement against what the node was actually sent: the statement names this node,
its requester, job, purpose and legal basis are the header's, its spec and protection
digests are those of the spec and protection in the body, and it has not expired. The
roster's size against the dataset's ``min_participants`` is a policy rule
(:mod:`nodes.policy.rules`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from datafed.errors import ProtocolError, QueryError
from datafed.modes import (
    ContextNeeded,
    NodeEnv,
    ProtectionMode,
    SteppedMode,
    hold_context,
    mode_class,
)
from datafed.pki.ca import Identity
from datafed.proto.v1 import common_pb2, query_pb2
from datafed.query.components import components
from datafed.query.domain import GroupKey, declared_domain
from datafed.query.spec import Comparison, Predicate, QuerySpec, Scalar
from datafed.wire.serde import literal_from_proto, spec_from_proto
from datafed.wire.signing import MAX_LIFETIME_MS, now_ms
from datafed.wire.statement import SignedJobStatement, message_digest
from nodes.config import DatasetPolicy, LimitsSection
from nodes.context import NodeContext
from nodes.errors import ContextMissing, InvalidRequest, PermissionDenied, Unauthenticated
from nodes.gate import CLOCK_SKEW_MS
from nodes.limits import check_cost, check_paillier_key, check_query_fields, estimate
from nodes.partners import check_roster
from nodes.policy import Use
from nodes.policy.dp import check_dp_range
from nodes.policy.rules import reports_domain
from nodes.rpc import SignedCall
from nodes.stores.types import terms

__all__ = [
    "MAX_DOMAIN",
    "QueryJob",
    "decode_query",
    "open_query",
    "open_query_async",
    "parse_query",
]

#: Most group keys a protected GROUP BY may declare by default (``limits.max_domain_keys``).
MAX_DOMAIN = LimitsSection().max_domain_keys
_DECODER: ThreadPoolExecutor | None = None


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


async def open_query_async(ctx: NodeContext, call: SignedCall, identity: Identity) -> QueryJob:
    """:func:`open_query` on the node's one decoding thread: off the event loop, in order.

    One thread, first in first out: queries are admitted in the order they arrived, as
    when decoding ran on the event loop (two racing queries meet the policy engine in the
    same order at every node), while a large request delays only the decoding of the
    requests behind it, never the event loop (steps, node info, receipts go on).
    """
    global _DECODER
    if _DECODER is None:
        _DECODER = ThreadPoolExecutor(1, thread_name_prefix="datafed-decode")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DECODER, open_query, ctx, call, identity)


def open_query(ctx: NodeContext, call: SignedCall, identity: Identity) -> QueryJob:
    """Open, bound, decode and cost one signed query (blocking; see module docs).

    Raises
    ------
    NodeError
        The refusal to record as ``denied``: nothing was admitted or read.
    """
    limits = ctx.config.limits
    body = call.open(parse_query, identity=identity)
    call.protection = body.protection.mode[:32]
    check_query_fields(body, limits)
    job = decode_query(ctx.name, call, body, limits)
    check_roster(ctx, job.statement.statement.roster)  # every participant recognised here
    policy = ctx.policy.policy(job.spec.dataset)
    if job.mode.name == "paillier":
        check_paillier_key(job.params, policy, job.spec.dataset)
    declared = _declared(job, policy, limits)
    domain_bytes = sum(k.ByteSize() for k in body.protection.domain)
    cost = estimate(
        job.spec,
        components(job.spec),
        job.mode,
        job.params,
        None if declared is None else len(declared),
        domain_bytes,
        len(job.statement.statement.roster),
        limits,
    )
    check_cost(cost, limits, ctx.config.node.max_message_bytes)
    ctx.store.check(job.spec)  # what the dataset cannot run (types, columns): no data read
    if policy.dp is not None:  # noise the node's values cannot hold: refused, nothing spent
        check_dp_range(job.spec, policy.dp, job.fixed_point_bits)
    job = dataclasses.replace(job, domain=_own_domain(ctx, job, declared))
    _check_params(ctx, job)
    if issubclass(job.mode, SteppedMode):
        ctx.jobs.ensure_room(identity.name)
    _hold_context(job, bytes(body.public_context), identity.name)
    return job


def _hold_context(job: QueryJob, attached: bytes, requester: str) -> None:
    """CKKS: keep the public context the params name for this job, before admission.

    A context named by its digest that this node does not hold for ``requester`` (and
    the request did not carry) is refused here, charged nothing: the client resends.
    """
    if job.mode.name != "ckks":
        if attached:
            raise InvalidRequest(f"protection {job.mode.name!r} takes no public context")
        return
    ttl_s = max(0.0, (job.statement.statement.expires_at_ms - now_ms()) / 1000)
    try:
        hold_context(requester, job.statement.statement.job_id, job.params, attached, ttl_s)
    except ContextNeeded as exc:
        raise ContextMissing(str(exc)) from exc
    except ValueError as exc:
        raise InvalidRequest(f"protection 'ckks': {exc}") from exc


def _check_params(ctx: NodeContext, job: QueryJob) -> None:
    """The protection's parameters, checked before admission: they depend on no row.

    A fault of the request's own (a value width, participants other than the roster, one
    aggregator named twice, a threshold without an honest majority) is refused here,
    charged nothing, rather than failing after admission (red team finding 1).
    """
    env = NodeEnv(
        ctx.name,
        job.statement.statement.job_id,
        ctx.signing_key,
        ctx.anchors_pem,
        binding="",
        roster=tuple(job.statement.statement.roster),
    )
    try:
        job.mode.check_params(env, job.params)
    except ValueError as exc:
        raise InvalidRequest(f"protection {job.mode.name!r}: {exc}") from exc


def _declared(job: QueryJob, policy: DatasetPolicy, limits: LimitsSection) -> list[GroupKey] | None:
    """The groups this node reports: its own declared domain, never the analyst's.

    Where the node reports a domain (``nodes.policy.rules.reports_domain``) it is the
    declared one and its remainder (:mod:`datafed.query.domain`). Elsewhere (exact data,
    a mode that shows each node's groups) the node reports its own groups (``None``) and a
    request may not name any.
    """
    if not reports_domain(policy, job.mode.name):
        if job.domain is not None:
            raise InvalidRequest(
                f"protection {job.mode.name!r} on an exact dataset reports the node's own "
                "groups: send no group domain"
            )
        return None
    try:
        return declared_domain(
            job.spec.group_by, policy.group_domains, limit=limits.max_domain_keys
        )
    except QueryError as exc:
        raise PermissionDenied(str(exc)) from exc


def _own_domain(
    ctx: NodeContext, job: QueryJob, declared: list[GroupKey] | None
) -> list[GroupKey] | None:
    """The declared domain typed as its columns; a request's must be exactly it.

    The analyst controls no keys, duplicates or multiplicities: a domain in the request
    is refused unless it is the node's own, in the same order.
    """
    if declared is None:
        return None
    own = ctx.store.typed_keys(job.spec, declared)
    if job.domain is not None and ctx.store.typed_keys(job.spec, job.domain) != own:
        raise InvalidRequest(
            "the group domain is not this node's declared one (the policy's group_domains "
            "in canonical order, then the remainder): nodes serving a dataset must declare "
            "the same values"
        )
    return own


def decode_query(
    node: str,
    call: SignedCall,
    body: query_pb2.QueryRequestBody,
    limits: LimitsSection | None = None,
) -> QueryJob:
    """Decode and cross-check a query; raise InvalidRequest/Unauthenticated to refuse it."""
    assert call.identity is not None and call.header is not None
    limits = limits or LimitsSection()
    try:
        spec = spec_from_proto(
            body.spec,
            max_conditions=limits.max_predicate_nodes,
            max_values=limits.max_where_values,
        )
    except (QueryError, ProtocolError) as exc:  # both documented by datafed.wire.serde
        raise InvalidRequest(str(exc)) from exc
    _no_order_on_booleans(spec.where)
    call.dataset = spec.dataset
    mode, domain = _protection(body.protection, spec, limits.max_domain_keys)
    if not body.HasField("statement"):
        raise InvalidRequest("a query must carry its job statement")
    statement = call.open_statement(body.statement)
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


def _no_order_on_booleans(where: Predicate | None) -> None:
    """Refuse ``x < true``: SQL has no order on booleans and SQLAlchemy cannot compile it."""
    for p in terms(where):
        if isinstance(p, Comparison) and isinstance(p.value, bool) and p.op not in ("=", "!="):
            raise InvalidRequest(f"a boolean can only be compared with = or !=, not {p.op!r}")


def _protection(
    msg: query_pb2.Protection, spec: QuerySpec, max_domain: int
) -> tuple[type[ProtectionMode], list[tuple[Scalar | None, ...]] | None]:
    try:
        mode = mode_class(msg.mode)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if msg.fixed_point_bits > 32:
        raise InvalidRequest(f"fixed_point_bits must be in [0, 32], got {msg.fixed_point_bits}")
    if len(msg.domain) > max_domain:
        raise InvalidRequest(f"group domain larger than {max_domain} (limits.max_domain_keys)")
    domain = [tuple(literal_from_proto(v) for v in k.values) for k in msg.domain] or None
    if domain is not None and any(len(k) != len(spec.group_by) for k in domain):
        raise InvalidRequest("group domain keys do not match GROUP BY")
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
