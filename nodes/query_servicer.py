"""The node's QueryService: authenticate, decide, record, compute, protect, record, answer.

Order of operations for every request (DESIGN §4):

1. peer certificate -> identity; signature, header and nonce verified (:mod:`nodes.gate`);
2. spec and protection decoded and checked against the dataset's policy;
3. ``approved`` or ``denied`` appended to the ledger (durable) -- a denial ends here;
4. the local aggregate computed through the store, small groups suppressed;
5. values protected per mode, ``released`` appended with the result digest;
6. the answer returned with the ledger head and this request's entry indexes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import NoReturn

import grpc

from audit.receipt_serde import receipt_to_proto
from datafed.errors import QueryError
from datafed.pki import Identity
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.query.components import components
from datafed.query.modes import NodeEnv, ProtectionMode, mode_class
from datafed.query.spec import QuerySpec, Scalar
from datafed.serde import literal_from_proto, literal_to_proto, spec_from_proto
from datafed.signing import RequestHeader, now_ms
from nodes.context import NodeContext
from nodes.dp import add_noise, check_dp
from nodes.errors import InvalidRequest, NodeError, status_of
from nodes.gate import open_signed, peer_identity, request_digest
from nodes.policy import apply_min_group_size, check_query
from nodes.signoff import check_signoffs, grant_signoff, parse_signoff_request

__all__ = ["QueryServicer"]

log = logging.getLogger("datafed.node")


def _parse_query(body: bytes) -> tuple[common_pb2.RequestHeader, query_pb2.QueryRequestBody]:
    msg = query_pb2.QueryRequestBody.FromString(body)
    return msg.header, msg


MAX_DOMAIN = 10_000


@dataclass(frozen=True)
class _Protection:
    mode: type[ProtectionMode]
    bits: int
    params: bytes
    domain: list[tuple[Scalar | None, ...]] | None


def _protection(msg: query_pb2.Protection, spec: QuerySpec) -> _Protection:
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
    return _Protection(mode, msg.fixed_point_bits, msg.params, domain)


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """gRPC QueryService of one agency node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def Query(  # noqa: N802 - gRPC method name
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> query_pb2.QueryResponse:
        """Answer one signed, protected aggregate query."""
        ctx = self.ctx
        digest = request_digest(request)
        identity: Identity | None = None
        header: RequestHeader | None = None
        spec: QuerySpec | None = None
        mode = ""
        try:
            identity = peer_identity(context)
            header, body = open_signed(
                request, identity, ctx.name, ctx.nonces, now_ms(), _parse_query
            )
            mode = body.protection.mode[:32]
            try:
                spec = spec_from_proto(body.spec)
            except QueryError as exc:
                raise InvalidRequest(str(exc)) from exc
            pspec = _protection(body.protection, spec)
            decision = check_query(
                ctx.config,
                {n: ctx.store.columns(n) for n in ctx.store.names()},
                identity,
                header.purpose,
                spec,
                pspec.mode.name,
            )
            if decision.error is not None:
                raise decision.error
            signoffs = check_signoffs(ctx, header, spec, body.sign_offs)
            dp = ctx.config.dataset(spec.dataset).policy.dp  # type: ignore[union-attr]
            if dp is not None:
                check_dp(spec, components(spec), dp)
                ctx.budget.check(identity.name, spec.dataset, dp.epsilon_per_query)
        except NodeError as exc:
            await self._deny(context, exc, identity, header, spec, mode, digest)
        approved = await ctx.record(
            caller=identity,
            header=header,
            dataset=spec.dataset,
            operation="query",
            protection=pspec.mode.name,
            decision="approved",
            reason=decision.reason,
            request_digest=digest,
            details=signoffs,
        )
        epsilon = dp.epsilon_per_query if dp is not None else 0.0
        try:
            response, suppressed = await asyncio.to_thread(self._compute, spec, pspec, header)
            if epsilon:
                ctx.budget.charge(identity.name, spec.dataset, epsilon)
        except Exception as exc:
            err = exc if isinstance(exc, NodeError) else NodeError("internal error while computing")
            if not isinstance(exc, NodeError):
                log.exception("query %s failed after approval", header.job_id)
            await self._deny(context, err, identity, header, spec, mode, digest)
        result_digest = hashlib.sha256(response.SerializeToString(deterministic=True)).hexdigest()
        released = await ctx.record(
            caller=identity,
            header=header,
            dataset=spec.dataset,
            operation="query",
            protection=pspec.mode.name,
            decision="released",
            reason=f"{len(response.groups)} group(s) released, {suppressed} suppressed below k",
            request_digest=digest,
            result_digest=result_digest,
            epsilon=epsilon,
        )
        receipt = await asyncio.to_thread(ctx.ledger.receipt, [approved, released])
        response.receipt.CopyFrom(receipt_to_proto(receipt))
        head = ctx.head()
        response.ledger.CopyFrom(
            query_pb2.LedgerHead(
                origin=head.origin,
                size=head.size,
                root_hash=head.root_hash,
                entry_indexes=[approved, released],
            )
        )
        return response

    def _compute(
        self, spec: QuerySpec, pspec: _Protection, header: RequestHeader
    ) -> tuple[query_pb2.QueryResponse, int]:
        ctx = self.ctx
        comps = components(spec)
        policy = ctx.config.dataset(spec.dataset).policy  # type: ignore[union-attr]
        bounds = policy.dp.bounds if policy.dp is not None else None
        groups = ctx.store.aggregate(spec, comps, pspec.bits, bounds)
        groups, suppressed = apply_min_group_size(policy, groups)
        released_sets = None
        if policy.differencing_defence and ctx.guard is not None and groups:
            ids = ctx.store.row_ids(spec, [g.key for g in groups])
            if ids is not None:
                released_sets = list(ids.values())
                ctx.guard.check(
                    header.requester, spec.dataset, released_sets, policy.min_group_size
                )
        if pspec.domain is None:
            keys = [g.key for g in groups]
            flat = [v for g in groups for v in g.values]
        else:
            by_key = {g.key: g.values for g in groups}
            zeros = (0,) * len(comps)
            keys = list(pspec.domain)
            flat = [v for k in keys for v in by_key.get(k, zeros)]
        stddev: list[float] = []
        if policy.dp is not None:
            flat, stddev = add_noise(flat, comps, policy.dp, pspec.bits)
        stash = ctx.jobs.stash(header, spec.dataset, pspec.mode.name) if pspec.mode.steps else None
        env = NodeEnv(
            ctx.name, header.job_id, ctx.signing_key, ctx.tls.ca, comps, pspec.bits, stash
        )
        try:
            payload = pspec.mode.protect(env, pspec.params, flat)
        except (ValueError, OverflowError) as exc:
            raise InvalidRequest(str(exc)) from exc
        response = query_pb2.QueryResponse(
            node=ctx.name,
            job_id=header.job_id,
            components=[c.label for c in comps],
            fixed_point_bits=pspec.bits,
            payload=payload,
            epsilon=policy.dp.epsilon_per_query if policy.dp is not None else 0.0,
            noise_stddev=stddev,
        )
        for k in keys:
            response.groups.add().values.extend(literal_to_proto(v) for v in k)
        if released_sets is not None and ctx.guard is not None:
            ctx.guard.remember(header.requester, spec.dataset, released_sets)
        return response, suppressed

    async def _deny(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        exc: NodeError,
        identity: Identity | None,
        header: RequestHeader | None,
        spec: QuerySpec | None,
        mode: str,
        digest: str,
    ) -> NoReturn:
        await self.ctx.deny(
            context,
            exc,
            caller=identity,
            header=header,
            dataset=spec.dataset if spec else "",
            operation="query",
            protection=mode,
            request_digest=digest,
        )

    async def GrantSignOff(  # noqa: N802 - gRPC method name
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> query_pb2.SignOff:
        """Approve another node's dataset use if this node's grants allow it; record it."""
        ctx = self.ctx
        digest = request_digest(request)
        identity: Identity | None = None
        header: RequestHeader | None = None
        target = ""
        try:
            identity = peer_identity(context)
            header, body = open_signed(
                request, identity, ctx.name, ctx.nonces, now_ms(), parse_signoff_request
            )
            target = f"{body.target_node[:64]}/{body.dataset[:64]}"
            signed = grant_signoff(ctx, identity, header, body)
        except NodeError as exc:
            await ctx.deny(
                context,
                exc,
                caller=identity,
                header=header,
                dataset=target,
                operation="sign_off",
                protection="",
                request_digest=digest,
            )
        await ctx.record(
            caller=identity,
            header=header,
            dataset=target,
            operation="sign_off",
            protection="",
            decision="approved",
            reason="sign-off granted",
            request_digest=digest,
            result_digest=hashlib.sha256(signed.statement).hexdigest(),
        )
        return signed

    def _dataset_info(self, name: str) -> query_pb2.DatasetInfo:
        info = query_pb2.DatasetInfo(name=name, columns=list(self.ctx.store.columns(name)))
        cfg = self.ctx.config.dataset(name)
        if cfg is not None:
            info.required_signoff.extend(cfg.policy.required_signoff)
        for col, values in (cfg.policy.group_domains if cfg else {}).items():
            info.group_domains.add(column=col, values=[literal_to_proto(v) for v in values])
        return info

    async def NodeInfo(  # noqa: N802 - gRPC method name
        self,
        request: query_pb2.NodeInfoRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> query_pb2.NodeInfoResponse:
        """Describe the node's datasets and ledger head (no data is read)."""
        try:
            peer_identity(context)
        except NodeError as exc:
            code, message = status_of(exc)
            await context.abort(code, message)
        head = self.ctx.head()
        return query_pb2.NodeInfoResponse(
            node=self.ctx.name,
            agency=self.ctx.config.node.agency,
            datasets=[self._dataset_info(n) for n in self.ctx.store.names()],
            ledger=query_pb2.LedgerHead(
                origin=head.origin, size=head.size, root_hash=head.root_hash
            ),
            certificate_pem=self.ctx.tls.cert,
        )
