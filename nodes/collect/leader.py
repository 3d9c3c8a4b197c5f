"""The Leader's aggregation loop: leased jobs to the Helper, commits, windows closed at both.

Job drivers (``workers`` of them, in ``serve`` or in ``datafed-node collect-worker``
processes sharing the task's PostgreSQL database) take stored reports in upload order
and drive one aggregation job each (DAP §4.5.1.1) over the batched pure functions of
:mod:`datafed.protocols` (:func:`~datafed.protocols.leader_start`,
:func:`~datafed.protocols.leader_finish`):

1. **claim** (one transaction): a job ID, the oldest pending reports marked in it, and a
   lease on the job in the database's clock (:meth:`CollectStore.claim_job`); a job
   whose lease ran out -- its worker died or stalled -- is taken over first
   (:meth:`CollectStore.reclaim_job`, a new generation);
2. **build**: the Leader's first verification step for every report at once; reports
   it rejects itself are counted in their window at the commit. Deterministic, so a
   job taken over is rebuilt byte for byte and the Helper sees the same request;
3. **send**, signed, to the Helper; while the Helper is down the job is resent with
   back-off and its lease renewed, uploads go on being accepted, and nothing is lost;
4. **finish** (one transaction): the Helper's answer checked in full, then each window's
   output shares, count, checksum and rejections merged, the reports done (their shares
   dropped), the job forgotten -- only while the job is still this generation's.

The Helper answers a job it already ran with the same response, so a report is counted
exactly once at both, whoever finishes the job. ``serve`` also closes windows as they
fall due (:mod:`nodes.collect.closer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from datafed.client import FederationConfig, NodeEndpoint, Transport
from datafed.errors import DatafedError, RemoteError
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc
from datafed.protocols import LeaderStart, ReportError, WindowSum, leader_finish, leader_start
from nodes.collect.closer import close_due
from nodes.collect.db import StoreUnavailable
from nodes.collect.helper import DECRYPT_ERROR
from nodes.collect.packed import Inits, pack_inits, read_resps
from nodes.collect.runtime import TaskRuntime
from nodes.collect.storage import ReportCols, WindowDelta
from nodes.context import NodeContext
from nodes.partners import check_roster

__all__ = ["LeaderLoop"]

log = logging.getLogger("datafed.node")
PURPOSE = "collect"
#: Clock difference a job driver tolerates (the gate's tolerance is 30 s).
MAX_SKEW_S = 20.0


@dataclass
class _Job:
    """A job claimed by this driver: its reports, the Leader's side, the request."""

    job_id: bytes
    generation: int
    rows: ReportCols
    start: LeaderStart
    body: collect_pb2.AggregateInitRequest


def owner_name() -> str:
    """Who holds a lease: host and process (what the jobs table shows)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def delta(s: WindowSum) -> WindowDelta:
    """A pure window sum as the store merges it."""
    return WindowDelta(s.agg, s.count, s.checksum, dict(s.rejected))


class HelperLink:
    """The Leader's signed channel to one task's Helper.

    The Helper's TLS certificate is checked against the CAs this node trusts *now*
    (``ctx.anchors_pem``: home and recognised partners, docs/federation.md): the channel is
    rebuilt when they change, and no call goes to a Helper of a federation no longer
    recognised (:func:`nodes.partners.check_roster`).
    """

    def __init__(self, ctx: NodeContext, helper: str, address: str) -> None:
        self.ctx, self.helper, self.address = ctx, helper, address
        self._anchors = ctx.anchors_pem
        self.transport = self._transport()

    def _transport(self) -> Transport:
        fed = FederationConfig(
            analyst=self.ctx.name,
            tls=self.ctx.config.tls,
            nodes=[NodeEndpoint(name=self.helper, address=self.address)],
            timeout_s=60.0,
        )
        tls = dataclasses.replace(self.ctx.tls, ca=self._anchors)
        return Transport(fed, tls, self.ctx.signing_key)

    async def call(self, rpc: str, body: Any, job_id: str) -> Any:
        """Send ``body`` (a fresh header added) as a signed ``rpc`` to the Helper."""
        check_roster(self.ctx, [self.helper])
        anchors = self.ctx.anchors_pem
        if anchors != self._anchors:  # a partner recognised or withdrawn since
            await self.transport.aclose()
            self._anchors = anchors
            self.transport = self._transport()
        msg = type(body)()
        msg.CopyFrom(body)
        msg.header.CopyFrom(self.transport.header(self.helper, job_id, PURPOSE))
        signed = self.transport.sign(msg).request

        async def go(ch: Any) -> Any:
            stub = collect_pb2_grpc.CollectServiceStub(ch)
            return await getattr(stub, rpc)(signed, timeout=self.transport.config.timeout_s)

        return await self.transport.call(self.helper, go)

    async def aclose(self) -> None:
        """Close the channel."""
        await self.transport.aclose()


class JobDriver:
    """Claims, builds, sends and finishes jobs of one task (see module docs)."""

    def __init__(self, rt: TaskRuntime, link: HelperLink, lease_s: float) -> None:
        self.rt, self.link = rt, link
        self.lease_ms = int(lease_s * 1000)
        self.owner = owner_name()
        self._clock_checked = -1e9
        self._skewed = False

    def clock_skew(self) -> float:
        """This process's clock minus the database's, in seconds."""
        return time.time() - self.rt.store.now_ms() / 1000

    def stands_aside(self) -> bool:
        """Whether this worker's clock is too far off to sign for the task (checked often).

        Leases and report times follow the database's clock, but the Helper checks the
        time in every signed request against its own: a worker whose clock is off by more
        than that tolerance would hold jobs it can never finish, so it takes none and
        says why; the other workers do the aggregation.
        """
        if time.monotonic() - self._clock_checked > 10.0:
            self._clock_checked = time.monotonic()
            skew = self.clock_skew()
            was, self._skewed = self._skewed, abs(skew) > MAX_SKEW_S
            if self._skewed and not was:
                log.error(
                    "collect %s: this process's clock is %+.0f s off the database's; it takes "
                    "no jobs until its clock is fixed (NTP)",
                    self.rt.name,
                    skew,
                )
        return self._skewed

    def _claim(self) -> _Job | None:
        rt = self.rt
        if self.stands_aside():
            return None
        got = rt.store.reclaim_job(self.owner, self.lease_ms)
        if got is not None:
            job_id, generation, rows = got
            log.info("collect %s: taking over job %s (its lease ran out)", rt.name, job_id.hex())
        else:
            job_id = secrets.token_bytes(16)
            generation, rows = rt.store.claim_job(
                job_id, rt.config.job_size, self.owner, self.lease_ms
            )
            if not rows:
                return None
        return self._build(job_id, generation, rows)

    def _build(self, job_id: bytes, generation: int, rows: ReportCols) -> _Job:
        rt = self.rt
        closed = rt.store.closed_among(set(map(rt.task.window, rows.times)))
        start = leader_start(
            rt.task,
            rt.verify_key,
            rows.ids,
            rows.times,
            rows.public_shares,
            rows.leader_shares,
            closed,
        )
        body = collect_pb2.AggregateInitRequest(task=rt.name, task_id=rt.task_id, job_id=job_id)
        cols = (rows.ids, rows.times, rows.public_shares, rows.encs, rows.ciphertexts)
        if len(start.sent) != len(rows):  # some rejected by the Leader itself: not sent
            cols = tuple([c[j] for j in start.sent] for c in cols)  # type: ignore[assignment]
        pack_inits(body, Inits(*cols, start.payloads))
        return _Job(job_id, generation, rows, start, body)

    async def step(self) -> bool:
        """Drive one job to its end; ``False`` when nothing was pending."""
        job = await asyncio.to_thread(self._claim)
        if job is None:
            return False
        if not job.start.sent:  # every report rejected by the Leader itself
            await asyncio.to_thread(self._finish, job, collect_pb2.AggregateInitResponse())
            return True
        backoff = 0.2
        while True:
            try:
                resp = await self.link.call("AggregateInit", job.body, f"agg-{job.job_id.hex()}")
                await asyncio.to_thread(self._finish, job, resp)
                return True
            except (RemoteError, ValueError) as exc:
                log.warning("collect %s: job %s: %s; retrying", self.rt.name, job.job_id.hex(), exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if not await asyncio.to_thread(
                self.rt.store.renew_job, job.job_id, job.generation, self.lease_ms
            ):
                log.warning("collect %s: job %s was taken over", self.rt.name, job.job_id.hex())
                return True

    def _finish(self, job: _Job, resp: collect_pb2.AggregateInitResponse) -> None:
        rt, rows = self.rt, job.rows
        if job.start.sent and bytes(resp.job_id) != job.job_id:
            raise ValueError("the Helper answered another job")
        answers, undecryptable = [], []
        got = read_resps(resp, len(job.start.sent)) if job.start.sent else []
        if len(got) != len(job.start.sent):
            raise ValueError("the Helper's answer does not list the job's reports")
        for j, (error, payload) in zip(job.start.sent, got, strict=True):
            if error == DECRYPT_ERROR:
                undecryptable.append(j)
                answers.append((ReportError.VDAF_VERIFY_ERROR.value, b""))
            else:
                if error:
                    ReportError(error)  # an unknown error raises ValueError
                answers.append((error, payload))
        times = rows.times
        sums = leader_finish(rt.task, job.start, rows.ids, times, answers, set())
        for j in undecryptable:
            s = sums[rt.task.window(times[j])]
            s.reject(ReportError.VDAF_VERIFY_ERROR, -1)
            s.reject(DECRYPT_ERROR)
        deltas = {w: delta(s) for w, s in sums.items()}
        for d in deltas.values():
            d.rejected = {k: n for k, n in d.rejected.items() if n}
        if not rt.store.finish_job(job.job_id, job.generation, deltas):
            log.warning(
                "collect %s: job %s was taken over; not committed", rt.name, job.job_id.hex()
            )


class LeaderLoop:
    """Job drivers and (in ``serve``) the window closer of one task at its Leader."""

    #: Seconds between the closer's passes (sooner when a job finishes while a closing
    #: window waits on jobs).
    CLOSE_TICK_S = 0.25

    def __init__(
        self,
        ctx: NodeContext,
        rt: TaskRuntime,
        *,
        drivers: int = 2,
        closer: bool = True,
        lease_s: float = 30.0,
    ) -> None:
        self.ctx, self.rt = ctx, rt
        helper = rt.config.helper
        self.link = HelperLink(ctx, helper.name, helper.address)
        self.drivers = [JobDriver(rt, self.link, lease_s) for _ in range(drivers)]
        self.closer = closer
        self._wake = asyncio.Event()
        #: A job finished while a closing window waited on jobs: close it now, not at the
        #: closer's next tick (a window closes no earlier than before, only sooner after).
        self._close_now = asyncio.Event()
        self._closing_waits = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start the drivers and the closer on the running event loop.

        On SQLite (one process) the jobs stored before a restart are taken over at once.
        """
        if self.rt.store.db.dialect == "sqlite" and self.drivers:
            n = self.rt.store.release_leases()
            if n:
                log.info("collect %s: resending %d stored job(s)", self.rt.name, n)
        self._tasks = [asyncio.create_task(self._worker(d)) for d in self.drivers]
        if self.closer:
            self._tasks.append(asyncio.create_task(self._closer()))

    def wake(self) -> None:
        """Reports arrived: start a job now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the current step (claimed jobs stay stored and are taken over)."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.link.aclose()

    async def call(self, rpc: str, body: Any, job_id: str) -> Any:
        """Send ``body`` as a signed ``rpc`` to the Helper (the closer's channel)."""
        return await self.link.call(rpc, body, job_id)

    async def _worker(self, driver: JobDriver) -> None:
        while not self._stopping:
            try:
                if await driver.step():
                    if self._closing_waits:
                        self._close_now.set()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                self._wake.clear()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("collect %s: %s; retrying", self.rt.name, exc)
                await asyncio.sleep(1.0)
            except DatafedError as exc:  # e.g. the Helper's federation no longer recognised
                log.warning("collect %s: %s; the job stays stored", self.rt.name, exc)
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not stop collection; the job stays stored
                log.exception("collect %s: aggregation worker failed", self.rt.name)
                await asyncio.sleep(1.0)

    # -- windows ---------------------------------------------------------------------
    async def _closer(self) -> None:
        while not self._stopping:
            self._close_now.clear()
            try:
                self._closing_waits = await close_due(self)
            except asyncio.CancelledError:
                raise
            except (RemoteError, DatafedError) as exc:
                self._closing_waits = False
                log.warning("collect %s: closing a window: %s; retrying", self.rt.name, exc)
            except Exception:
                self._closing_waits = False
                log.exception("collect %s: window closer failed", self.rt.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._close_now.wait(), self.CLOSE_TICK_S)
