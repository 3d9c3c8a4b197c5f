"""The Leader's window closer: a window due is closed at the Helper, then at the Leader.

A window becomes ``closing`` once it is due -- reports at least ``close_after_s`` past its
end have arrived (event time, the Leader's watermark), or that long has passed on the wall
clock since the later of its end and its last report -- after which uploads for it are
refused (``batch_collected``). When none of its reports is pending or in a job any more,
the Leader sends its report count and checksum; the Helper compares them with its own and
closes the window (:mod:`nodes.collect.helper`); then the Leader: each records the
window's entry (:mod:`nodes.collect.entries`), then marks the window closed. A window with
fewer than ``min_batch_size`` verified reports is closed the same way and never released.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from datafed.proto.v1 import collect_pb2
from datafed.protocols import InvalidBatchSize, Leader
from datafed.wire.signing import RequestHeader, now_ms
from nodes.collect.entries import record_window
from nodes.collect.helper import body_digest
from nodes.collect.runtime import TaskRuntime, close_job_id
from nodes.context import NodeContext

__all__ = ["ClosingLoop", "close_due", "close_window"]

log = logging.getLogger("datafed.node")
PURPOSE = "collect"


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


async def close_due(loop: ClosingLoop) -> None:
    """Mark due windows ``closing``; close those with nothing pending (see module docs)."""
    rt, p, after = loop.rt, loop.rt.spec.time_precision, loop.rt.config.close_after_s
    now = await asyncio.to_thread(rt.store.now_ms) / 1000  # the database's clock
    watermark = await asyncio.to_thread(rt.store.watermark)
    for w in await asyncio.to_thread(rt.store.windows, where="state != 'closed'"):
        end = w.start + p
        if w.state == "open":
            seen = max(end, w.last_seen_ms / 1000)
            if watermark < end + after and now < seen + after:
                continue
            await asyncio.to_thread(rt.store.set_state, w.start, "closing")
        if await asyncio.to_thread(rt.store.unfinished, w.start):
            loop.wake()
            continue
        await close_window(loop, w.start)


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
