"""The one ledger entry per closed window, written alike at both aggregators.

Both entries carry the same job id (``collect.<task>.<window start>``), the same request
digest (SHA-256 of the Leader's close request without its header: the task ID, the
window, the Leader's report count and checksum) and the requester (the Leader node), so
``datafed-audit reconcile`` lines them up, and a collector checks both before it trusts
a window. The result digest is the SHA-256 of that aggregator's (un-noised) aggregate
share; the details are public: counts of reports aggregated and rejected, by reason. On a
task with noise those are data the collector must not see (:mod:`nodes.release.collect`):
the counts, the rejections and the share digest go to the entry's private part instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from datafed.pki.ca import Identity
from datafed.wire.signing import RequestHeader
from nodes.collect.runtime import TaskRuntime
from nodes.collect.storage import WindowRow
from nodes.context import NodeContext
from nodes.release.collect import close_entry

__all__ = ["OPERATION", "record_window"]

OPERATION = "collect_window"


async def record_window(
    ctx: NodeContext,
    rt: TaskRuntime,
    row: WindowRow,
    *,
    caller: Identity,
    header: RequestHeader,
    close_digest: str,
    share_digest: str,
    releasable: bool,
    upload_rejected: Mapping[str, int] | None = None,
) -> int:
    """Append the window's entry; return its index once durable."""
    end = row.start + rt.spec.time_precision
    reason = (
        f"window [{row.start}, {end}) of {rt.name} closed: {row.count} reports aggregated, "
        f"{row.rejected_count} rejected"
    )
    if not releasable:
        reason += f"; fewer than {rt.spec.min_batch_size} reports: never released"
    facts = {
        "reports": str(row.count),
        "rejected": str(row.rejected_count),
        "releasable": "true" if releasable else "false",
        **{f"rejected.{k}": str(v) for k, v in sorted(row.rejected.items())},
        **{f"upload_rejected.{k}": str(v) for k, v in sorted((upload_rejected or {}).items())},
    }
    public, private, share_digest, reason = close_entry(rt.spec, facts, share_digest, reason)
    details = {
        "task": rt.name,
        "task_id": rt.task_id.hex(),
        "window": str(row.start),
        "duration": str(rt.spec.time_precision),
        **public,
    }
    return await ctx.record(
        caller=caller,
        header=header,
        dataset=rt.name,
        operation=OPERATION,
        protection="prio3",
        decision="approved",
        reason=reason,
        request_digest=close_digest,
        result_digest=share_digest,
        details=details,
        private=private,
    )
