"""The node's CollectService: every collection RPC through the one signed-RPC pipeline.

================  ==========================  ================================================
RPC               who may call                what it does
================  ==========================  ================================================
GetTask           any party of the federation the task's parameters and both certificates
Upload            a ``gateway`` (the task's   reports checked and stored durably at the Leader
                  ``uploaders`` if listed)    (:mod:`.upload`), a status per report
AggregateInit     the task's Leader node      one aggregation job at the Helper (:mod:`.helper`)
CloseWindow       the task's Leader node      closes one window at the Helper, ledgered
ListWindows       the task's collectors       closed windows, releasable or not
GetWindow         the task's collectors       one window's aggregate share (:mod:`.release`)
================  ==========================  ================================================

Each method runs inside :func:`nodes.rpc.signed_call`: certificate, signature, header and
nonce first; any refusal is recorded ``denied`` with its reason and sent as one gRPC
status with a clear message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from datafed.collect import spec_to_proto
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc, common_pb2
from nodes.collect.entries import OPERATION, record_window
from nodes.collect.helper import body_digest, close_at_helper, queue_job, run_job
from nodes.collect.release import collect_use, get_window
from nodes.collect.runtime import TaskRuntime
from nodes.collect.upload import STATUS, store_uploads
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NotFound, PermissionDenied
from nodes.gate import peer_identity
from nodes.release.collect import releasable
from nodes.rpc import Context, SignedCall, parser, signed_call

__all__ = ["CollectServicer"]

M = TypeVar("M", bound=Message)


class CollectServicer(collect_pb2_grpc.CollectServiceServicer):
    """gRPC CollectService of one node (see module docs).

    Parameters
    ----------
    ctx : NodeContext
        The node.
    tasks : dict
        Task name -> runtime, every ``[[collect]]`` task of the node.
    wake : callable
        ``wake(task)``: reports arrived at the Leader of ``task``.
    """

    def __init__(
        self,
        ctx: NodeContext,
        tasks: dict[str, TaskRuntime],
        wake: Callable[[str], None],
        *,
        queued: bool = False,
    ) -> None:
        self.ctx, self.tasks, self._wake = ctx, tasks, wake
        #: Hand aggregation jobs to worker processes through the database.
        self.queued = queued

    def _task(self, call: SignedCall, name: str, role: str | None = None) -> TaskRuntime:
        rt = self.tasks.get(name)
        if rt is None:
            raise NotFound(f"unknown collection task {name[:64]!r}")
        call.dataset, call.protection = rt.name, "prio3"
        if role is not None and rt.role != role:
            other = rt.config.leader.name if role == "leader" else rt.config.helper.name
            raise InvalidRequest(f"{self.ctx.name} is not the {role} of {rt.name!r}; {other} is")
        return rt

    def _from_leader(self, call: SignedCall, rt: TaskRuntime) -> None:
        ident = call.identity
        assert ident is not None
        if ident.role != "node" or ident.name != rt.config.leader.name:
            raise PermissionDenied(f"only {rt.config.leader.name}, the task's leader, may do this")

    @asynccontextmanager
    async def _rpc(
        self,
        context: Context,
        request: common_pb2.SignedRequest,
        operation: str,
        cls: type[M],
        role: str | None = None,
    ) -> AsyncIterator[tuple[SignedCall, M, TaskRuntime]]:
        """One signed call about a task: opened, its task found, this node in ``role``.

        The Helper's RPCs are the task's Leader's alone. The peer is identified on the
        event loop (the call's TLS context); the signature check, the parse of the body
        (an upload is 150-200 KB) and the nonce's durable claim (an fsync) run in a
        worker thread, so the event loop goes on serving the other calls and the jobs.
        """
        async with signed_call(self.ctx, context, request, operation) as call:
            peer = peer_identity(context, self.ctx.trust)
            body = await asyncio.to_thread(call.open, parser(cls), identity=peer)
            rt = self._task(call, body.task, role)  # type: ignore[attr-defined]
            if role == "helper":
                self._from_leader(call, rt)
            yield call, body, rt

    async def GetTask(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.GetTaskResponse:
        """The task's public parameters and both aggregators' certificates."""
        msg = collect_pb2.GetTaskRequest
        async with self._rpc(context, request, "collect_task", msg) as (_, _, rt):
            return collect_pb2.GetTaskResponse(
                params=spec_to_proto(rt.spec),
                task_id=rt.task_id,
                leader_certificate_pem=rt.leader_pem,
                helper_certificate_pem=rt.helper_pem,
            )

    async def Upload(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.UploadResponse:
        """Check and store a gateway's reports; one status per report."""
        msg = collect_pb2.UploadRequest
        async with self._rpc(context, request, "collect_upload", msg, "leader") as (call, body, rt):
            ident = call.identity
            assert ident is not None
            if ident.role != "gateway":
                raise PermissionDenied(
                    f"role {ident.role!r} may not upload reports; need 'gateway'"
                )
            if ident.federation != self.ctx.identity.federation and (
                ident.name not in rt.config.uploaders
            ):  # a partner city's gateway only if named (docs/federation.md)
                raise PermissionDenied(
                    f"gateway {ident.name!r} of partner federation {ident.federation!r} is not "
                    f"among the uploaders of {rt.name!r}"
                )
            if rt.config.uploaders and ident.name not in rt.config.uploaders:
                raise PermissionDenied(f"gateway {ident.name!r} may not upload to {rt.name!r}")
            if len(body.reports) > rt.config.max_upload:
                raise InvalidRequest(f"at most {rt.config.max_upload} reports per upload")
            statuses = await asyncio.to_thread(store_uploads, rt, body.reports)
            self._wake(rt.name)
            codes = [STATUS[s] for s in statuses]
            ok = sum(c in (collect_pb2.ACCEPTED, collect_pb2.DUPLICATE) for c in codes)
            return collect_pb2.UploadResponse(statuses=codes, accepted=ok)

    async def AggregateInit(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.AggregateInitResponse:
        """Run one aggregation job at the Helper (or answer it again)."""
        msg = collect_pb2.AggregateInitRequest
        async with self._rpc(context, request, "collect_aggregate", msg, "helper") as (_, body, rt):
            if self.queued:  # the Helper's worker processes run it (docs/collect.md)
                return await queue_job(rt, body)
            return await asyncio.to_thread(run_job, rt, body)

    async def CloseWindow(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.CloseWindowResponse:
        """Close one window at the Helper after checking the Leader's count and checksum."""
        msg = collect_pb2.CloseWindowRequest
        async with self._rpc(context, request, OPERATION, msg, "helper") as (call, body, rt):
            digest = body_digest(body)
            async with rt.lock:
                closed = await asyncio.to_thread(close_at_helper, rt, body, digest)
                if closed.fresh:
                    assert call.identity is not None and call.header is not None
                    index = await record_window(
                        self.ctx,
                        rt,
                        closed.row,
                        caller=call.identity,
                        header=call.header,
                        close_digest=digest,
                        share_digest=closed.share_digest,
                        releasable=closed.releasable,
                    )
                    await asyncio.to_thread(
                        rt.store.close_window,
                        body.window_start,
                        share_digest=closed.share_digest,
                        close_digest=digest,
                        releasable=closed.releasable,
                        close_index=index,
                    )
            return collect_pb2.CloseWindowResponse(
                report_count=closed.row.count,
                rejected_count=closed.row.rejected_count,
                share_digest=closed.share_digest,
            )

    async def ListWindows(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.ListWindowsResponse:
        """The task's closed windows (collectors only)."""
        msg = collect_pb2.ListWindowsRequest
        async with self._rpc(context, request, "collect", msg) as (call, body, rt):
            self.ctx.policy.check(collect_use(call, rt, body.since))
            rows = await asyncio.to_thread(
                rt.store.windows, where="state = 'closed' AND start >= ?", args=(body.since,)
            )
            out = collect_pb2.ListWindowsResponse()
            for r in rows:  # under DP every closed window is releasable (nodes.release.collect)
                out.windows.add(
                    start=r.start,
                    duration=rt.spec.time_precision,
                    releasable=releasable(rt.spec, r),
                )
            return out

    async def GetWindow(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> collect_pb2.GetWindowResponse:
        """Release one closed window's aggregate share to a collector."""
        msg = collect_pb2.GetWindowRequest
        async with self._rpc(context, request, "collect", msg) as (call, body, rt):
            return await get_window(call, rt, body)


def add_servicer(
    server: grpc.aio.Server,
    ctx: NodeContext,
    tasks: dict[str, TaskRuntime],
    wake: Callable[[str], None],
    *,
    queued: bool = False,
) -> None:
    """Register the CollectService on ``server``."""
    servicer = CollectServicer(ctx, tasks, wake, queued=queued)
    collect_pb2_grpc.add_CollectServiceServicer_to_server(servicer, server)
