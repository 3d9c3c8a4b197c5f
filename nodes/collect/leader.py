"""The Leader's aggregation loop: jobs to the Helper, commits, windows closed at both.

Two workers take stored reports in upload order and drive one aggregation job each
(DAP §4.5.1.1) through the pure :class:`datafed.protocols.Leader`:

1. **start** (one transaction): the job's request, without its header, is stored and its
   reports marked in the job; reports the Leader rejects itself (its own share does not
   verify, the window closed meanwhile) are counted in their window and done;
2. **send**, signed, to the Helper; while the Helper is down the job is resent with
   back-off, uploads go on being accepted, and nothing is lost;
3. **finish** (one transaction): the Helper's answer checked in full, then each window's
   output shares, count, checksum and rejections merged, the reports done (their shares
   dropped), the job forgotten.

After a crash the stored jobs are resent first: the Helper answers a job it already ran
with the same response, and the Leader rebuilds its side of the job from the same
reports (its first verification step is deterministic), so a report is counted exactly
once at both.

A third task closes windows as they fall due (:mod:`nodes.collect.closer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from datafed.client import FederationConfig, NodeEndpoint, Transport
from datafed.errors import RemoteError
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc
from datafed.protocols import (
    AggregationJobResp,
    InvalidMessage,
    Leader,
    Report,
    ReportError,
    VerifyResp,
)
from nodes.collect.closer import close_due
from nodes.collect.helper import DECRYPT_ERROR, window_deltas
from nodes.collect.runtime import TaskRuntime
from nodes.collect.storage import ReportRow, WindowDelta
from nodes.context import NodeContext

__all__ = ["LeaderLoop"]

log = logging.getLogger("datafed.node")
WORKERS = 2
PURPOSE = "collect"


@dataclass
class _Job:
    """A job sent (or to be sent) to the Helper and the Leader state that finishes it."""

    body: collect_pb2.AggregateInitRequest
    leader: Leader
    machine_job_id: bytes
    ids: list[bytes]
    before: dict[int, dict[ReportError, int]]

    @property
    def job_id(self) -> bytes:
        return bytes(self.body.job_id)


class LeaderLoop:
    """Aggregation workers and the window closer of one task at its Leader."""

    def __init__(self, ctx: NodeContext, rt: TaskRuntime) -> None:
        self.ctx, self.rt = ctx, rt
        helper = rt.config.helper
        fed = FederationConfig(
            analyst=ctx.name,
            tls=ctx.config.tls,
            nodes=[NodeEndpoint(name=helper.name, address=helper.address)],
            timeout_s=60.0,
        )
        self.transport = Transport(fed, ctx.tls, ctx.signing_key)
        self._wake = asyncio.Event()
        self._take = asyncio.Lock()
        self._recovered: list[_Job] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start the workers and the closer on the running event loop."""
        self._recovered = self._recover()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(WORKERS)]
        self._tasks.append(asyncio.create_task(self._closer()))

    def wake(self) -> None:
        """Reports arrived: start a job now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the current step (open jobs stay stored and are resent at start)."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.transport.aclose()

    # -- jobs ------------------------------------------------------------------------
    async def _worker(self) -> None:
        while not self._stopping:
            try:
                async with self._take:
                    job = self._recovered.pop(0) if self._recovered else None
                    if job is None:
                        job = await asyncio.to_thread(self._build)
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.5)
                    self._wake.clear()
                    continue
                await self._drive(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop collection; the job stays stored
                log.exception("collect %s: aggregation worker failed", self.rt.name)
                await asyncio.sleep(1.0)

    def _machine(self, rows: list[ReportRow], now: int) -> tuple[Leader, list[bytes]]:
        rt = self.rt
        leader = Leader(rt.task, rt.verify_key)
        leader.close(tuple(rt.store.closed_among(rt.task.window(r.time) for r in rows)))
        refused = []
        for r in rows:
            report = Report(
                r.report_id, r.time, r.public_share, r.leader_share, r.enc + r.ciphertext
            )
            if leader.upload(report, now) is not None:
                refused.append(r.report_id)  # cannot happen for a stored report; never stuck
        return leader, refused

    def _build(self) -> _Job | None:
        """Start the next job; ``None`` when no report is pending."""
        while True:
            job = self._build_one()
            if not isinstance(job, bool):
                return job

    def _build_one(self) -> _Job | bool | None:
        rt = self.rt
        rows = rt.store.pending(rt.config.job_size)
        if not rows:
            return None
        now = int(time.time())
        leader, refused = self._machine(rows, now)
        req = leader.start_job(now)
        inits = req.verify_inits if req is not None else ()
        sent = [v.report_id for v in inits]
        went = set(sent)
        rejected = [r.report_id for r in rows if r.report_id not in went]
        before = {w.start: dict(w.rejected) for w in leader.windows()}
        deltas = {
            w: WindowDelta(rejected={e.value: n for e, n in rej.items()})
            for w, rej in before.items()
            if rej
        }
        times = {r.report_id: r.time for r in rows}
        for rid in refused:  # counted as malformed
            w = rt.task.window(times[rid])
            d = deltas.setdefault(w, WindowDelta())
            d.rejected["invalid_message"] = d.rejected.get("invalid_message", 0) + 1
        body = collect_pb2.AggregateInitRequest(
            task=rt.name, task_id=rt.task_id, job_id=req.job_id if req is not None else b""
        )
        for v in inits:
            body.inits.add(
                report_id=v.report_id,
                time=v.time,
                public_share=v.public_share,
                helper_enc=v.helper_share[:32],
                helper_ciphertext=v.helper_share[32:],
                payload=v.payload,
            )
        rt.store.start_job(body.job_id, body.SerializeToString(), sent, rejected, deltas)
        if req is None:
            return False  # every report rejected by the Leader itself: take the next ones
        return _Job(body, leader, req.job_id, sent, before)

    def _recover(self) -> list[_Job]:
        """Rebuild the Leader side of every job stored as sent (see module docs)."""
        jobs = []
        for job_id, raw in self.rt.store.open_jobs():
            body = collect_pb2.AggregateInitRequest.FromString(raw)
            rows = self.rt.store.job_reports(job_id)
            leader, _ = self._machine(rows, int(time.time()))
            req = leader.start_job(int(time.time()))
            again = [(v.report_id, v.payload) for v in req.verify_inits] if req else []
            if again != [(bytes(m.report_id), bytes(m.payload)) for m in body.inits]:
                log.error("collect %s: stored job %s does not rebuild", self.rt.name, job_id.hex())
                continue
            assert req is not None
            before = {w.start: dict(w.rejected) for w in leader.windows()}
            jobs.append(_Job(body, leader, req.job_id, [r for r, _ in again], before))
        if jobs:
            log.info("collect %s: resending %d stored job(s)", self.rt.name, len(jobs))
        return jobs

    async def _drive(self, job: _Job) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                resp = await self.call("AggregateInit", job.body, f"agg-{job.job_id.hex()}")
                await asyncio.to_thread(self._finish, job, resp)
                self._wake.set()
                return
            except (RemoteError, InvalidMessage) as exc:
                log.warning("collect %s: job %s: %s; retrying", self.rt.name, job.job_id.hex(), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def call(self, rpc: str, body: Any, job_id: str) -> Any:
        """Send ``body`` (a fresh header added) as a signed ``rpc`` to the Helper."""
        helper = self.rt.config.helper.name
        msg = type(body)()
        msg.CopyFrom(body)
        msg.header.CopyFrom(self.transport.header(helper, job_id, PURPOSE))
        signed = self.transport.sign(msg).request

        async def go(ch: Any) -> Any:
            stub = collect_pb2_grpc.CollectServiceStub(ch)
            return await getattr(stub, rpc)(signed, timeout=self.transport.config.timeout_s)

        return await self.transport.call(helper, go)

    def _finish(self, job: _Job, resp: collect_pb2.AggregateInitResponse) -> None:
        rt, times = self.rt, {bytes(m.report_id): m.time for m in job.body.inits}
        if bytes(resp.job_id) != job.job_id:
            raise InvalidMessage
        verify, undecryptable = [], []
        for m in resp.resps:
            rid, error = bytes(m.report_id), None
            if m.error == DECRYPT_ERROR:
                error = ReportError.VDAF_VERIFY_ERROR
                undecryptable.append(rid)
            elif m.error:
                try:
                    error = ReportError(m.error)
                except ValueError as exc:
                    raise InvalidMessage from exc
            verify.append(VerifyResp(rid, None if error else bytes(m.payload), error))
        job.leader.finish_job(AggregationJobResp(job.machine_job_id, tuple(verify)))
        deltas = window_deltas(job.leader, job.before)
        for rid in undecryptable:
            d = deltas[rt.task.window(times[rid])]
            d.rejected[ReportError.VDAF_VERIFY_ERROR.value] -= 1
            d.rejected[DECRYPT_ERROR] = d.rejected.get(DECRYPT_ERROR, 0) + 1
        for d in deltas.values():
            d.rejected = {k: n for k, n in d.rejected.items() if n}
        rt.store.finish_job(job.job_id, job.ids, deltas)

    # -- windows ---------------------------------------------------------------------
    async def _closer(self) -> None:
        while not self._stopping:
            try:
                await close_due(self)
            except asyncio.CancelledError:
                raise
            except RemoteError as exc:
                log.warning("collect %s: closing a window: %s; retrying", self.rt.name, exc)
            except Exception:
                log.exception("collect %s: window closer failed", self.rt.name)
            await asyncio.sleep(0.25)
