"""Releasing one closed window's aggregate share to a collector (DAP §4.6, per aggregator).

Each aggregator answers the collector itself, through the node's one pipeline
(:func:`nodes.rpc.signed_call`) and its one policy engine:

1. the task's rules (:func:`nodes.policy.rules.check`): an analyst among the task's
   collectors, for one of its purposes -- before anything about the window is said;
2. the window must be closed (its entry written at both aggregators); without noise it
   must also hold at least ``min_batch_size`` verified reports, otherwise the request is
   refused and recorded ``denied`` (as in DAP, exact counts are not protected then);
3. admission (``approved``, atomically with the (epsilon, delta) the task's noise costs,
   charged to the collector's budget: admission is spending);
4. the answer goes through :mod:`nodes.release.collect`: with noise, this aggregator
   adds its own fresh draw to every element of its aggregate share, calibrated so that
   this one draw gives the whole guarantee even if the other aggregator adds none, and
   the window's counts and the digest of its un-noised share are withheld;
5. ``released`` with the answer's digest; the answer carries the receipt of this
   request's entries and the receipt of the window's close entry.
"""

from __future__ import annotations

import asyncio

from datafed.collect import answer_digest
from datafed.proto.v1 import collect_pb2
from nodes.collect.runtime import TaskRuntime, close_job_id
from nodes.errors import InvalidRequest, PermissionDenied
from nodes.policy import Use
from nodes.release.collect import collect_cost, releasable, release_share, released_facts
from nodes.rpc import SignedCall

__all__ = ["collect_use", "get_window", "noisy_share"]


def collect_use(call: SignedCall, rt: TaskRuntime, window: int) -> Use:
    """The policy engine's view of a collector's request."""
    assert call.identity is not None and call.header is not None
    epsilon, delta = collect_cost(rt.spec)
    return Use(
        operation="collect",
        requester=call.identity,
        header=call.header,
        dataset=rt.name,
        protection="prio3",
        epsilon=epsilon,
        delta=delta,
        details={"task": rt.name, "window": str(window)},
    )


def noisy_share(rt: TaskRuntime, agg: list[int]) -> bytes:
    """This aggregator's encoded aggregate share, with a fresh draw per element if DP."""
    return release_share(rt.spec, rt.vdaf, agg)


async def get_window(
    call: SignedCall, rt: TaskRuntime, body: collect_pb2.GetWindowRequest
) -> collect_pb2.GetWindowResponse:
    """Serve one window (see module docs); every refusal raises a NodeError."""
    start = body.window_start
    use = collect_use(call, rt, start)
    call.details.update(task=rt.name, window=str(start))
    call.ctx.policy.check(use)  # who may ask comes first: others learn nothing of windows
    row = await asyncio.to_thread(rt.store.window, start)
    if row is None or row.state != "closed":
        raise InvalidRequest(
            f"window {start} of {rt.name!r} is not closed; a window closes "
            f"{rt.config.close_after_s} s after its end"
        )
    if not releasable(rt.spec, row):
        raise PermissionDenied(
            f"window {start} of {rt.name!r} has fewer than {rt.spec.min_batch_size} verified "
            "reports and is never released"
        )
    grant = await call.admit(use)
    share = await call.compute(noisy_share, rt, row.agg)
    dp = rt.spec.dp
    facts = released_facts(rt.spec, row)
    reply = collect_pb2.GetWindowResponse(
        node=call.ctx.name,
        task=rt.name,
        task_id=rt.task_id,
        window_start=start,
        duration=rt.spec.time_precision,
        report_count=facts.report_count,
        rejected_count=facts.rejected_count,
        checksum=facts.checksum,
        aggregate_share=share,
        noise=dp.mechanism if dp is not None else "",
        noise_stddev=rt.spec.noise_stddev(),
        epsilon=grant.epsilon,
        close_job_id=close_job_id(rt.name, start),
        close_request_digest=row.close_digest,
        share_digest=facts.share_digest,
        rejected=facts.rejected,
    )
    counted = f": {row.count} reports" if dp is None else ""
    await call.release(answer_digest(reply), f"window {start} of {rt.name}{counted}")
    reply.ledger.CopyFrom(call.head())
    reply.receipt.CopyFrom(await call.receipt())
    reply.close_receipt.CopyFrom(await call.receipt([row.close_index]))
    return reply
