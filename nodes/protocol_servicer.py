"""The node's ProtocolService: the signed steps of multi-step protection modes.

A step continues a job this node approved in a Query (``shares``/``ckks`` aggregation,
the ``secagg`` rounds).  For every request:

1. peer certificate -> identity; signature, header and nonce verified (:mod:`nodes.gate`);
2. the job must be open here for the same requester, purpose and mode (:mod:`nodes.jobs`);
3. the mode runs the step on the job's state (one step of a job at a time);
4. the step is appended to the ledger (``released``, or ``denied`` with the reason) before
   the reply leaves, with ``details`` naming the step and its round; the reply carries a
   receipt (signed checkpoint and inclusion proof) of that entry.

A bad step gets a clear gRPC error and a ``denied`` entry; it changes no data and no
budget.  Steps are recorded with ``operation = "query"`` so that every entry of a job
agrees across nodes (:func:`audit.usage.reconcile`); ``details["step"]`` says which.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, NoReturn

import grpc

from audit.receipt_serde import receipt_to_proto
from datafed.errors import ProtocolError
from datafed.pki import Identity
from datafed.proto.v1 import common_pb2, protocol_pb2, protocol_pb2_grpc, query_pb2
from datafed.query.modes import NodeEnv, mode_class
from datafed.signing import RequestHeader, now_ms
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError
from nodes.gate import open_signed, peer_identity, request_digest
from nodes.jobs import Job

__all__ = ["ProtocolServicer", "add_protocol_service"]

log = logging.getLogger("datafed.node")


def _parse_step(body: bytes) -> tuple[common_pb2.RequestHeader, protocol_pb2.StepRequestBody]:
    msg = protocol_pb2.StepRequestBody.FromString(body)
    return msg.header, msg


def add_protocol_service(server: grpc.aio.Server, ctx: NodeContext) -> None:
    """Register the ProtocolService of ``ctx``'s node on ``server``."""
    protocol_pb2_grpc.add_ProtocolServiceServicer_to_server(ProtocolServicer(ctx), server)


class ProtocolServicer(protocol_pb2_grpc.ProtocolServiceServicer):
    """gRPC ProtocolService of one agency node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def _open_job(
        self, identity: Identity, header: RequestHeader, body: protocol_pb2.StepRequestBody
    ) -> tuple[Job, str]:
        job = self.ctx.jobs.get(identity.name, header.job_id)
        if job is None:
            raise InvalidRequest(f"no open protocol job {header.job_id!r} for {identity.name}")
        if body.mode != job.mode:
            raise InvalidRequest(f"job {header.job_id!r} runs protection {job.mode!r}")
        if header.purpose != job.purpose:
            raise InvalidRequest("the step's purpose differs from the approved query's")
        steps = mode_class(job.mode).steps
        if not 1 <= body.round <= len(steps):
            raise InvalidRequest(f"protection {job.mode!r} has rounds 1..{len(steps)}")
        return job, steps[body.round - 1]

    async def Step(  # noqa: N802 - gRPC method name
        self,
        request: common_pb2.SignedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> protocol_pb2.StepResponse:
        """Run one signed step of an open job."""
        ctx = self.ctx
        digest = request_digest(request)
        identity: Identity | None = None
        header: RequestHeader | None = None
        job: Job | None = None
        mode = ""
        try:
            identity = peer_identity(context)
            header, body = open_signed(
                request, identity, ctx.name, ctx.nonces, now_ms(), _parse_step
            )
            mode = body.mode[:32]
            job, name = self._open_job(identity, header, body)
            reply = await self._run(job, header, body)
        except NodeError as exc:
            await self._deny(context, exc, identity, header, job, mode, digest)
            raise AssertionError("unreachable") from exc  # abort() raises
        index = await ctx.record(
            caller=identity,
            header=header,
            dataset=job.dataset,
            operation="query",
            protection=job.mode,
            decision="released",
            reason=f"{job.mode} step {name!r} (round {body.round})",
            request_digest=digest,
            result_digest=hashlib.sha256(reply).hexdigest(),
            details={"step": name, "step_round": str(body.round)},
        )
        if body.round == len(mode_class(job.mode).steps):
            ctx.jobs.drop(job.requester, job.job_id)
        receipt = await asyncio.to_thread(ctx.ledger.receipt, [index])
        head = ctx.head()
        return protocol_pb2.StepResponse(
            node=ctx.name,
            job_id=header.job_id,
            round=body.round,
            payload=reply,
            ledger=query_pb2.LedgerHead(
                origin=head.origin, size=head.size, root_hash=head.root_hash, entry_indexes=[index]
            ),
            receipt=receipt_to_proto(receipt),
        )

    async def _run(
        self, job: Job, header: RequestHeader, body: protocol_pb2.StepRequestBody
    ) -> bytes:
        ctx = self.ctx
        cls = mode_class(job.mode)
        env = NodeEnv(ctx.name, header.job_id, ctx.signing_key, ctx.tls.ca)
        payload, round_ = bytes(body.payload), body.round

        def step(state: Any) -> bytes:
            return cls.step(env, state, round_, payload)

        try:
            return await asyncio.to_thread(job.run, step)
        except (ValueError, ProtocolError) as exc:
            raise InvalidRequest(str(exc)) from exc
        except Exception as exc:
            log.exception("step %d of job %s failed", round_, header.job_id)
            raise NodeError("internal error while running the step") from exc

    async def _deny(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        exc: NodeError,
        identity: Identity | None,
        header: RequestHeader | None,
        job: Job | None,
        mode: str,
        digest: str,
    ) -> NoReturn:
        await self.ctx.deny(
            context,
            exc,
            caller=identity,
            header=header,
            dataset=job.dataset if job else "",
            operation="query",
            protection=job.mode if job else mode,
            request_digest=digest,
            details={"step": "refused"},
        )
