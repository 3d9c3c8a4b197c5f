"""The node's ProtocolService: the signed steps of multi-step protection modes.

A step continues a job this node admitted in a Query (``shares``/``ckks`` aggregation,
the ``secagg`` rounds); it is not a new admission. Every step runs the node's one
pipeline (:mod:`nodes.rpc`):

1. peer certificate -> identity; signature, header and nonce verified (:mod:`nodes.gate`);
2. the job must be open here for the same requester, purpose and mode (:mod:`nodes.query.jobs`);
3. the mode runs the step on the job's state (one step of a job at a time), bound to the
   job statement the Query admitted (its digest, roster and ``min_participants``);
4. the step is appended to the ledger (``released``, or ``denied`` with the reason) before
   the reply leaves, with ``details`` naming the step and its round; the reply carries a
   receipt (signed checkpoint and inclusion proof) of that entry.

A bad step gets a clear gRPC error and a ``denied`` entry; it changes no data and no
budget.  Round 0 cancels the job: the requester abandons it (Ctrl-C), the node drops its
state at once (so it no longer counts against the requester's open-job quota) and records
the cancel (``denied``, "cancelled by the requester").  Steps are recorded with
``operation = "query"`` so that every entry of a job agrees across nodes
(:func:`audit.usage.reconcile`); ``details["step"]`` says which.
"""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

from datafed.errors import ProtocolError
from datafed.modes import SteppedMode, mode_class
from datafed.proto.v1 import common_pb2, protocol_pb2, protocol_pb2_grpc
from nodes.context import NodeContext
from nodes.errors import InvalidRequest
from nodes.query.jobs import Job
from nodes.rpc import Context, SignedCall, signed_call

__all__ = ["CANCEL_ROUND", "ProtocolServicer", "add_protocol_service"]

#: The step round that cancels an open job (``datafed.client._session.CANCEL_ROUND``).
CANCEL_ROUND = 0


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
        self, call: SignedCall, body: protocol_pb2.StepRequestBody
    ) -> tuple[Job, type[SteppedMode], str]:
        assert call.identity is not None and call.header is not None
        header = call.header
        job = self.ctx.jobs.get(call.identity.name, header.job_id)
        if job is None:
            raise InvalidRequest(f"no open protocol job {header.job_id!r} for {call.identity.name}")
        call.dataset, call.protection = job.dataset, job.mode
        if body.mode != job.mode:
            raise InvalidRequest(f"job {header.job_id!r} runs protection {job.mode!r}")
        if header.purpose != job.purpose:
            raise InvalidRequest("the step's purpose differs from the approved query's")
        cls = mode_class(job.mode)
        assert issubclass(cls, SteppedMode)
        if not 1 <= body.round <= len(cls.steps):
            raise InvalidRequest(f"protection {job.mode!r} has rounds 1..{len(cls.steps)}")
        return job, cls, cls.steps[body.round - 1]

    async def Step(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> protocol_pb2.StepResponse:
        """Run one signed step of an open job."""
        async with signed_call(self.ctx, context, request, "query") as call:
            call.details["step"] = "refused"
            body = call.open(_parse_step)
            call.protection = body.mode[:32]
            if body.round == CANCEL_ROUND:
                return await self._cancel(call, body)
            job, cls, name = self._open_job(call, body)
            call.details["statement"] = job.binding
            assert call.header is not None
            reply = await self._run(call, job, cls, body)
            call.details.update(step=name, step_round=str(body.round))
            await call.release(
                hashlib.sha256(reply).hexdigest(), f"{job.mode} step {name!r} (round {body.round})"
            )
            if body.round == len(cls.steps):
                self.ctx.jobs.drop(job.requester, job.job_id)
            return protocol_pb2.StepResponse(
                node=self.ctx.name,
                job_id=call.header.job_id,
                round=body.round,
                payload=reply,
                ledger=call.head(),
                receipt=await call.receipt(),
            )

    async def _cancel(
        self, call: SignedCall, body: protocol_pb2.StepRequestBody
    ) -> protocol_pb2.StepResponse:
        """The requester abandons its open job (Ctrl-C): drop it, so it holds no quota.

        Recorded as ``denied`` ("cancelled by the requester"): nothing more is released.
        """
        assert call.identity is not None and call.header is not None
        job = self.ctx.jobs.get(call.identity.name, call.header.job_id)
        if job is None:
            raise InvalidRequest(f"no open protocol job {call.header.job_id!r} to cancel")
        call.dataset, call.protection = job.dataset, job.mode
        if body.mode != job.mode or call.header.purpose != job.purpose:
            raise InvalidRequest("the cancel's mode or purpose differs from the approved query's")
        self.ctx.jobs.drop(job.requester, job.job_id)
        call.details.update(statement=job.binding, step="cancel", step_round="0")
        await call.record(
            decision="denied", reason="cancelled by the requester: the job is closed here"
        )
        return protocol_pb2.StepResponse(
            node=self.ctx.name, job_id=job.job_id, round=CANCEL_ROUND, ledger=call.head()
        )

    async def _run(
        self,
        call: SignedCall,
        job: Job,
        cls: type[SteppedMode],
        body: protocol_pb2.StepRequestBody,
    ) -> bytes:
        assert call.header is not None
        env = self.ctx.mode_env(call.header.job_id, job.bound)
        payload, round_ = bytes(body.payload), body.round

        def step(state: Any) -> bytes:
            return cls.step(env, state, round_, payload)

        try:
            return await call.compute(job.run, step)  # the node's fair compute threads
        except (ValueError, ProtocolError) as exc:
            raise InvalidRequest(str(exc)) from exc
