"""Releasing one closed window's aggregate share to a collector (DAP §4.6, per aggregator).

Each aggregator answers the collector itself, through the node's one pipeline
(:func:`nodes.rpc.signed_call`) and its one policy engine:

1. the task's rules (:func:`nodes.policy.rules.check`): an analyst among the task's
   collectors, for one of its purposes -- before anything about the window is said;
2. the window must be closed (its entry written at both aggregators) and hold at least
   ``min_batch_size`` verified reports; otherwise the request is refused and recorded
   ``denied`` (report counts are not protected: DAP gives the collector each batch's
   exact count too);
3. admission (``approved``, atomically with the epsilon the task's noise costs, charged
   to the collector's budget: admission is spending);
4. with noise, this aggregator adds its own draw to every element of its aggregate share
   -- discrete Laplace or discrete Gaussian from the exact samplers of
   :mod:`datafed.hazmat`, calibrated so that this one draw gives the whole guarantee even
   if the other aggregator adds none -- fresh at every release;
5. ``released`` with the answer's digest; the answer carries the receipt of this
   request's entries and the receipt of the window's close entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from datafed.collect import answer_digest
from datafed.hazmat import sample_discrete_gaussian, sample_discrete_laplace
from datafed.proto.v1 import collect_pb2
from nodes.collect.runtime import TaskRuntime, close_job_id
from nodes.errors import InvalidRequest, PermissionDenied
from nodes.policy import Use
from nodes.rpc import SignedCall

__all__ = ["collect_use", "get_window", "noisy_share"]


def collect_use(call: SignedCall, rt: TaskRuntime, window: int) -> Use:
    """The policy engine's view of a collector's request."""
    assert call.identity is not None and call.header is not None
    dp = rt.spec.dp
    return Use(
        operation="collect",
        requester=call.identity,
        header=call.header,
        dataset=rt.name,
        protection="prio3",
        epsilon=dp.epsilon_charged if dp is not None else 0.0,
        details={"task": rt.name, "window": str(window)},
    )


def noisy_share(rt: TaskRuntime, agg: list[int]) -> bytes:
    """This aggregator's encoded aggregate share, with a fresh draw per element if DP."""
    scale = rt.spec.noise_scale()
    if scale is not None:
        kind, value = scale
        draw: Any = sample_discrete_laplace if kind == "laplace" else sample_discrete_gaussian
        p = rt.vdaf.field.MODULUS
        agg = [(x + draw(value)) % p for x in agg]
    return rt.vdaf.encode_agg_share(agg)


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
    if not row.releasable:
        raise PermissionDenied(
            f"window {start} of {rt.name!r} has fewer than {rt.spec.min_batch_size} verified "
            "reports and is never released"
        )
    grant = await call.admit(use)
    share = await call.compute(noisy_share, rt, row.agg)
    dp = rt.spec.dp
    reply = collect_pb2.GetWindowResponse(
        node=call.ctx.name,
        task=rt.name,
        task_id=rt.task_id,
        window_start=start,
        duration=rt.spec.time_precision,
        report_count=row.count,
        rejected_count=row.rejected_count,
        checksum=row.checksum,
        aggregate_share=share,
        noise=dp.mechanism if dp is not None else "",
        noise_stddev=rt.spec.noise_stddev(),
        epsilon=grant.epsilon,
        close_job_id=close_job_id(rt.name, start),
        close_request_digest=row.close_digest,
        share_digest=row.share_digest,
        rejected=row.rejected,
    )
    await call.release(answer_digest(reply), f"window {start} of {rt.name}: {row.count} reports")
    reply.ledger.CopyFrom(call.head())
    reply.receipt.CopyFrom(await call.receipt())
    reply.close_receipt.CopyFrom(await call.receipt([row.close_index]))
    return reply
