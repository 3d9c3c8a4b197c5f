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

import grpc

from datafed.errors import QueryError
from datafed.pki import Identity
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.query.components import components
from datafed.query.protection import ProtectionSpec, protect
from datafed.query.spec import QuerySpec
from datafed.serde import literal_to_proto, spec_from_proto
from datafed.signing import RequestHeader, now_ms
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, status_of
from nodes.gate import open_signed, peer_identity, request_digest
from nodes.policy import apply_min_group_size, check_query

__all__ = ["QueryServicer"]

log = logging.getLogger("datafed.node")


def _parse_query(body: bytes) -> tuple[common_pb2.RequestHeader, query_pb2.QueryRequestBody]:
    msg = query_pb2.QueryRequestBody.FromString(body)
    return msg.header, msg


def _protection(msg: query_pb2.Protection) -> ProtectionSpec:
    try:
        n = int.from_bytes(msg.paillier_n, "big") if msg.paillier_n else None
        return ProtectionSpec(mode=msg.mode, fixed_point_bits=msg.fixed_point_bits, paillier_n=n)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


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
            pspec = _protection(body.protection)
            decision = check_query(
                ctx.config,
                {n: ctx.store.columns(n) for n in ctx.store.names()},
                identity,
                header.purpose,
                spec,
                pspec.mode,
            )
            if decision.error is not None:
                raise decision.error
        except NodeError as exc:
            await self._deny(context, exc, identity, header, spec, mode, digest)
            raise AssertionError("unreachable") from exc  # abort() raises
        approved = await ctx.record(
            caller=identity,
            header=header,
            dataset=spec.dataset,
            operation="query",
            protection=pspec.mode,
            decision="approved",
            reason=decision.reason,
            request_digest=digest,
        )
        try:
            response, suppressed = await asyncio.to_thread(self._compute, spec, pspec, header)
        except NodeError as exc:
            await self._deny(context, exc, identity, header, spec, mode, digest)
            raise AssertionError("unreachable") from exc
        result_digest = hashlib.sha256(response.SerializeToString(deterministic=True)).hexdigest()
        released = await ctx.record(
            caller=identity,
            header=header,
            dataset=spec.dataset,
            operation="query",
            protection=pspec.mode,
            decision="released",
            reason=f"{len(response.groups)} group(s) released, {suppressed} suppressed below k",
            request_digest=digest,
            result_digest=result_digest,
        )
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
        self, spec: QuerySpec, pspec: ProtectionSpec, header: RequestHeader
    ) -> tuple[query_pb2.QueryResponse, int]:
        ctx = self.ctx
        comps = components(spec)
        groups = ctx.store.aggregate(spec, comps, pspec.fixed_point_bits)
        policy = ctx.config.dataset(spec.dataset).policy  # type: ignore[union-attr]
        groups, suppressed = apply_min_group_size(policy, groups)
        response = query_pb2.QueryResponse(
            node=ctx.name,
            job_id=header.job_id,
            components=[c.label for c in comps],
            fixed_point_bits=pspec.fixed_point_bits,
        )
        for g in groups:
            try:
                protected = protect(pspec, g.values)
            except OverflowError as exc:
                raise InvalidRequest(str(exc)) from exc
            out = response.groups.add()
            out.key.extend(literal_to_proto(k) for k in g.key)
            for v in protected:
                if pspec.mode == "plain":
                    out.values.add(plain_fixed=v)
                else:
                    out.values.add(paillier_ciphertext=v.to_bytes((v.bit_length() + 7) // 8, "big"))
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
    ) -> None:
        code, message = status_of(exc)
        await self.ctx.record(
            caller=identity,
            header=header,
            dataset=spec.dataset if spec else "",
            operation="query",
            protection=mode,
            decision="denied",
            reason=f"{code.name}: {message}",
            request_digest=digest,
        )
        await context.abort(code, message)

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
            datasets=[
                query_pb2.DatasetInfo(name=n, columns=list(self.ctx.store.columns(n)))
                for n in self.ctx.store.names()
            ],
            ledger=query_pb2.LedgerHead(
                origin=head.origin, size=head.size, root_hash=head.root_hash
            ),
        )
