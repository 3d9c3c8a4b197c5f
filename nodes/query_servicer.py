"""The node's QueryService: protected aggregate queries, sign-offs for others, node info.

A query runs the node's one pipeline (:mod:`nodes.rpc`): the signed request is opened;
the spec, protection and job statement are decoded and checked against each other
(:mod:`nodes.query_job`); the policy engine admits the use (``approved``, epsilon
charged); the local aggregate is computed, protected and bound to the statement
(:mod:`nodes.query_compute`); ``released`` is recorded with the answer's digest -- the
per-node facts (groups released and suppressed) go to the entry's private part, which
only auditors read -- and the answer leaves with its receipt.
"""

from __future__ import annotations

import hashlib

import grpc

from datafed.errors import SignatureError
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.serde import literal_to_proto
from datafed.statement import open_job_statement
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, Unauthenticated, status_of
from nodes.gate import peer_identity
from nodes.policy.signoff import Signer, grant_signoff, parse_signoff_request
from nodes.query_compute import answer_digest, compute
from nodes.query_job import open_query_async
from nodes.rpc import signed_call

__all__ = ["QueryServicer"]


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
        async with signed_call(self.ctx, context, request, "query") as call:
            # Opened, bounded, decoded, typed and costed off the event loop (nodes.limits).
            job = await open_query_async(self.ctx, call, peer_identity(context))
            grant = await call.admit(job.use)
            response, facts = await call.compute(compute, self.ctx, grant, job)
            await call.release(answer_digest(response), "released", private=facts)
            response.receipt.CopyFrom(await call.receipt())
            response.ledger.CopyFrom(call.head())
            return response

    async def GrantSignOff(  # noqa: N802 - gRPC method name
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> query_pb2.SignOff:
        """Approve one job on another node's dataset if this node's grants allow it."""
        ctx = self.ctx
        async with signed_call(ctx, context, request, "sign_off") as call:
            body = call.open(parse_signoff_request)
            assert call.identity is not None and call.header is not None
            call.dataset = f"{body.target_node[:64]}/{body.dataset[:64]}"
            limit = ctx.config.limits.max_statement_bytes
            if body.statement.ByteSize() > limit:
                raise InvalidRequest(
                    f"the job statement is larger than {limit:,} bytes (limits.max_statement_bytes)"
                )
            try:
                statement = open_job_statement(body.statement, call.identity.signing_key)
            except SignatureError as exc:
                raise Unauthenticated("the job statement does not verify") from exc
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from exc
            call.details["statement"] = statement.digest
            signer = Signer(ctx.name, ctx.signing_key, ctx.tls.cert)
            signed = grant_signoff(ctx.config, signer, call.identity, call.header, body, statement)
            await call.record(
                decision="approved",
                reason="sign-off granted",
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
        return query_pb2.NodeInfoResponse(
            node=self.ctx.name,
            agency=self.ctx.config.node.agency,
            datasets=[self._dataset_info(n) for n in self.ctx.store.names()],
            ledger=self.ctx.head_proto(),
            certificate_pem=self.ctx.tls.cert,
        )
