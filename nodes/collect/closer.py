"""The Leader's window closer: windows close by time alone, in order, at the Helper then here.

Which windows close must not depend on the reports: under noise, a window that closed
(listed, releasable) while its empty neighbour did not would say exactly which windows
had a report. So the closer keeps one **task clock** and a **frontier**:

* the task clock is the watermark (the newest report time stored, event time) plus the
  wall-clock time (the database's) since the last report arrived: it follows the
  reports' times while a gateway uploads -- a replay of the past does not see windows
  close under it -- and runs on with the wall clock once uploads fall silent;
* every window of the task's range ``[start, end)``, from its start, whose end lies
  ``close_after_s`` behind the task clock becomes ``closing`` -- a row is made for a
  window that received no report -- and the frontier moves past it. The closing windows
  are always a prefix of the range, whatever the reports; at most
  :data:`MAX_DUE_PER_PASS` windows fall due per pass (a task whose start lies far in the
  past catches up in order, a bounded step every pass, never in one unbounded loop);
* before the first report there is no task clock and nothing closes (a task without a
  ``start`` begins at the window of its first report).

A closing window refuses uploads (``batch_collected``). When none of its reports is
pending or in a job any more, the Leader sends its report count and checksum (0 and zeros
for an empty window); the Helper compares them with its own and closes the window
(:mod:`nodes.collect.helper`); then the Leader: each records the window's entry
(:mod:`nodes.collect.entries`), then marks the window closed. Without noise a window with
fewer than ``min_batch_size`` verified reports (an empty one too) is closed the same way
and never released; with noise every closed window may be released, an empty one as the
noisy aggregate of no reports (:mod:`nodes.release.collect`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from datafed.collect import TaskSpec
from datafed.proto.v1 import collect_pb2
from datafed.protocols import InvalidBatchSize, Leader
from datafed.wire.signing import RequestHeader, now_ms
from nodes.collect.entries import record_window
from nodes.collect.helper import body_digest
from nodes.collect.runtime import TaskRuntime, close_job_id
from nodes.collect.storage import CollectStore
from nodes.context import NodeContext

__all__ = [
    "MAX_DUE_PER_PASS",
    "ClosingLoop",
    "close_due",
    "close_window",
    "due_windows",
    "mark_due",
]

log = logging.getLogger("datafed.node")
PURPOSE = "collect"
#: Most windows that fall due in one pass of the closer (one pass every 0.25 s).
MAX_DUE_PER_PASS = 100


class ClosingLoop(Protocol):
    """What the closer needs of the Leader's loop (:class:`nodes.collect.leader.LeaderLoop`)."""

    ctx: NodeContext
    rt: TaskRuntime

    def wake(self) -> None:
        """Have the aggregation workers look for pending reports now."""
        ...

    async def call(self, rpc: str, body: Any, job_id: str) -> Any:
        """Send ``body`` as a signed ``rpc`` to the task's Helper; return its answer."""
        ...


def due_windows(
    frontier: int, clock: int, spec: TaskSpec, close_after_s: int, most: int = MAX_DUE_PER_PASS
) -> list[int]:
    """Starts of the windows from ``frontier`` on that the task ``clock`` made due, in order.

    A window ``[s, s + p)`` is due once ``s + p + close_after_s <= clock``; none at or past
    the task's end; at most ``most``. Reports play no part (see module docs).
    """
    p, s = spec.time_precision, frontier
    out: list[int] = []
    while len(out) < most and s + p + close_after_s <= clock:
        if spec.end is not None and s >= spec.end:
            break
        out.append(s)
        s += p
    return out


def mark_due(
    store: CollectStore, spec: TaskSpec, close_after_s: int, most: int = MAX_DUE_PER_PASS
) -> list[int]:
    """Make the windows the task clock passed ``closing``, in order; blocking (a thread).

    Returns the windows made due in this pass (see module docs).
    """
    watermark = store.watermark()
    if not watermark:
        return []  # no report yet: no task clock
    now = store.now_ms()
    arrival = store.get_meta_int("arrival_ms", now)  # a file from before: the watermark alone
    clock = watermark + max(0, now - arrival) // 1000
    p = spec.time_precision
    first = spec.start if spec.start is not None else store.first_window()
    if first is None:
        return []
    first -= first % p
    frontier = max(store.get_meta_int("frontier", first), first)
    due = due_windows(frontier, clock, spec, close_after_s, most)
    if due:
        store.mark_due(due, due[-1] + p, now)
    if len(due) == most:
        log.info(
            "collect %s: catching up, windows up to %d due (at most %d a pass)",
            spec.name,
            due[-1],
            most,
        )
    return due


async def close_due(loop: ClosingLoop) -> bool:
    """Make due windows ``closing``; close them in order while nothing of theirs is pending.

    A closing window whose reports are still pending or in a job stops the pass: the
    windows after it wait for it, so windows close (and their entries enter both ledgers)
    in time order whatever the jobs' timing (see module docs). Returns whether a closing
    window waits on its reports' jobs (the caller may come back as soon as a job finishes
    rather than at its next tick).
    """
    rt = loop.rt
    await asyncio.to_thread(mark_due, rt.store, rt.spec, rt.config.close_after_s)
    for w in await asyncio.to_thread(rt.store.windows, where="state = 'closing'"):
        if await asyncio.to_thread(rt.store.unfinished, w.start):
            loop.wake()
            return True
        await close_window(loop, w.start)
    return False


async def close_window(loop: ClosingLoop, start: int) -> None:
    """Close one window at the Helper, then here; each writes the window's entry."""
    rt = loop.rt
    row = await asyncio.to_thread(rt.store.window, start)
    assert row is not None
    leader = Leader(rt.task, rt.verify_key)
    bucket = leader.bucket(start)
    bucket.agg_share, bucket.count, bucket.checksum = row.agg, row.count, row.checksum
    try:
        leader.collect(start, rt.spec.time_precision)
        releasable = True
    except InvalidBatchSize:
        releasable = False
    body = collect_pb2.CloseWindowRequest(
        task=rt.name,
        task_id=rt.task_id,
        window_start=start,
        report_count=row.count,
        checksum=row.checksum,
    )
    digest, job = body_digest(body), close_job_id(rt.name, start)
    resp = await loop.call("CloseWindow", body, job)
    if resp.report_count != row.count:
        log.error("collect %s: window %d: the Helper counts %d", rt.name, start, resp.report_count)
        return
    uploads = await asyncio.to_thread(rt.store.upload_rejections)
    t = now_ms()
    header = RequestHeader(loop.ctx.name, loop.ctx.name, job, b"", t, t, PURPOSE)
    index = await record_window(
        loop.ctx,
        rt,
        row,
        caller=loop.ctx.identity,
        header=header,
        close_digest=digest,
        share_digest=rt.share_digest(row.agg),
        releasable=releasable,
        upload_rejected=uploads,
    )
    await asyncio.to_thread(rt.store.forget_upload_rejections, uploads)
    await asyncio.to_thread(
        rt.store.close_window,
        start,
        share_digest=rt.share_digest(row.agg),
        close_digest=digest,
        releasable=releasable,
        close_index=index,
    )
    log.info("collect %s: window %d closed (%d reports)", rt.name, start, row.count)
