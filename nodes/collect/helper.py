"""The Helper's side of a collection task: aggregation jobs and closing windows.

An aggregation job (DAP §4.5.1.2) arrives from the Leader as one signed request. For
each report the Helper opens its sealed input share with the report's own task ID,
report ID, time and public share as the binding (:mod:`datafed.collect._seal`): a
share the Leader moved to another report ID or time does not open, and the report is
rejected (``hpke_decrypt_error``) and never aggregated. The shares then go through the
pure :class:`datafed.protocols.Helper`, seeded with what this node persisted: the
windows already closed and the report IDs already verified (replays). Its answer and
everything it committed -- the job's response, the verified IDs, each window's output
shares and rejections -- are written in one durable transaction before the answer
leaves; the same job again (a Leader retry) gets the stored answer, a different job
under the same ID is refused.

Closing a window (DAP §4.6.2) compares the Leader's report count and checksum with the
Helper's own; on agreement the window is closed for good and one ledger entry records
the task, window, counts, rejections and the digest of the aggregate share.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from datafed.collect import ShareOpener
from datafed.proto.v1 import collect_pb2
from datafed.protocols import (
    AggregateShareReq,
    BatchMismatch,
    Helper,
    HelperRun,
    InvalidBatchSize,
    Leader,
    ReportError,
    WindowSum,
    helper_run,
)
from nodes.collect.packed import Inits, pack_resps, read_inits
from nodes.collect.runtime import TaskRuntime
from nodes.collect.storage import Replayed, WindowDelta, WindowRow
from nodes.errors import InvalidRequest, Unavailable

__all__ = [
    "ClosedWindow",
    "body_digest",
    "close_at_helper",
    "queue_job",
    "run_job",
    "window_deltas",
]

DECRYPT_ERROR = "hpke_decrypt_error"


def body_digest(msg: collect_pb2.AggregateInitRequest | collect_pb2.CloseWindowRequest) -> str:
    """Hex SHA-256 of a Leader request without its header (the same across retries)."""
    raw = msg.SerializeToString(deterministic=True)
    bare = type(msg).FromString(raw)
    bare.ClearField("header")
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def run_job(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest, now: int | None = None
) -> collect_pb2.AggregateInitResponse:
    """Process (or answer again) one aggregation job, durably; blocking (run in a thread).

    Any Helper process may run it: the commit is one transaction that inserts the
    verified IDs under their unique index, so two processes never count a report twice
    (a report verified meanwhile by another job is answered ``report_replayed``).
    """
    _same_task(rt, body)
    job_id = bytes(body.job_id)
    if len(job_id) != 16:
        raise InvalidRequest("aggregation job id must be 16 bytes")
    digest = bytes.fromhex(body_digest(body))
    done = rt.store.helper_job(job_id)
    if done is not None:
        return _same_job(done, digest)
    inits = read_inits(body)
    ids, times = inits.ids, inits.times
    if len(set(ids)) != len(ids):
        raise InvalidRequest("an aggregation job repeats a report ID; nothing was aggregated")
    windows = sorted({rt.task.window(t) for t in times})
    shares = _open_shares(rt, inits)
    # The IDs verified before are read only for shares that did not open (they are never
    # verified here, so the commit could not name them): for the others the commit inserts
    # the job's IDs under their unique index and names those another job verified
    # (Replayed), and the job is recomputed with them answered report_replayed -- no
    # lookup per report, and a second pass only for a job that replays IDs.
    unopened = [rid for rid, share in zip(ids, shares, strict=True) if share is None]
    seen = rt.store.seen_among(unopened) if unopened else set()
    now = rt.store.now_ms() // 1000 if now is None else now  # the database's clock
    for _ in range(6):
        out, run = _answer(rt, body, inits, shares, seen, rt.store.closed_among(windows), now)
        deltas = {
            w: WindowDelta(s.agg, s.count, s.checksum, s.rejected) for w, s in run.sums.items()
        }
        try:
            other = rt.store.commit_helper_job(
                job_id, digest, out.SerializeToString(), run.seen, deltas, windows
            )
        except Replayed as exc:  # another process verified some of them first: again
            seen |= exc.ids
            continue
        return out if other is None else _same_job(other, digest)
    raise InvalidRequest("aggregation job kept racing other jobs; retry it")


async def queue_job(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest, timeout_s: float = 50.0
) -> collect_pb2.AggregateInitResponse:
    """Leave the job to the Helper's worker processes and wait for its committed answer.

    A worker that dies mid-job leaves it to lease out; another takes it. A Leader that
    gives up waiting resends the same job, which is found queued or answered.
    """
    _same_task(rt, body)
    job_id = bytes(body.job_id)
    if len(job_id) != 16:
        raise InvalidRequest("aggregation job id must be 16 bytes")
    digest = bytes.fromhex(body_digest(body))
    await asyncio.to_thread(rt.store.enqueue_helper_job, job_id, body.SerializeToString())
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while time.monotonic() < deadline:
        done = await asyncio.to_thread(rt.store.helper_job, job_id)
        if done is not None:
            return _same_job(done, digest)
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.1)
    raise Unavailable("the aggregation job is still running; resend it")


def _same_job(done: tuple[bytes, bytes], digest: bytes) -> collect_pb2.AggregateInitResponse:
    if done[0] != digest:
        raise InvalidRequest("aggregation job id reused for a different job")
    return collect_pb2.AggregateInitResponse.FromString(done[1])


def _same_task(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest | collect_pb2.CloseWindowRequest
) -> None:
    if bytes(body.task_id) != rt.task_id:
        raise InvalidRequest(
            f"task {rt.name!r} has another task ID here: the aggregators' configurations differ"
        )


def _open_shares(rt: TaskRuntime, inits: Inits) -> list[bytes | None]:
    """Open each report's sealed Helper share; ``None`` for one that does not open.

    A report whose share does not open is rejected; its ID is not burnt (it was not proven).
    """
    opener = ShareOpener(rt.x25519)
    return opener.open_many(
        rt.task_id, inits.ids, inits.times, inits.public_shares, inits.encs, inits.ciphertexts
    )


def _answer(
    rt: TaskRuntime,
    body: collect_pb2.AggregateInitRequest,
    inits: Inits,
    shares: list[bytes | None],
    seen: set[bytes],
    closed: set[int],
    now: int,
) -> tuple[collect_pb2.AggregateInitResponse, HelperRun]:
    """The answer, report by report (in the job's own form), and what the job commits."""
    run = helper_run(
        rt.task,
        rt.verify_key,
        inits.ids,
        inits.times,
        inits.public_shares,
        shares,
        inits.payloads,
        seen=seen,
        closed=closed,
        now=now,
    )
    answers = []
    for t, share, (error, payload) in zip(inits.times, shares, run.answers, strict=True):
        if share is None and not error:
            error = DECRYPT_ERROR
            run.sums.setdefault(rt.task.window(t), WindowSum()).reject(DECRYPT_ERROR)
        answers.append((error, payload))
    out = collect_pb2.AggregateInitResponse(job_id=body.job_id)
    if body.HasField("packed"):
        size = 5 + (rt.vdaf.xof.SEED_SIZE if rt.vdaf.uses_joint_rand else 0)  # a finish message
        pack_resps(out, answers, size)
    else:
        for rid, (error, payload) in zip(inits.ids, answers, strict=True):
            out.resps.add(report_id=rid, payload=payload, error=error)
    return out, run


def window_deltas(
    machine: Leader | Helper, before: Mapping[int, Mapping[ReportError, int]] | None = None
) -> dict[int, WindowDelta]:
    """What a job changed in each window of ``machine``: its aggregate and new rejections.

    ``before``: the rejections each window held before the job (none by default).
    """
    deltas: dict[int, WindowDelta] = {}
    for stats in machine.windows():
        b = machine.bucket(stats.start)
        old = (before or {}).get(stats.start, {})
        rejected = {e.value: n - old.get(e, 0) for e, n in stats.rejected.items()}
        deltas[stats.start] = WindowDelta(b.agg_share, b.count, b.checksum, rejected)
    return deltas


@dataclass(frozen=True)
class ClosedWindow:
    """A window the Helper closed now (``fresh``) or had closed for this same request."""

    row: WindowRow
    releasable: bool
    share_digest: str
    fresh: bool


def close_at_helper(
    rt: TaskRuntime, body: collect_pb2.CloseWindowRequest, digest: str
) -> ClosedWindow:
    """Check the Leader's count and checksum against ours; blocking (run in a thread).

    The window is not marked closed here: the caller records the ledger entry first,
    then :meth:`~nodes.collect.storage.CollectStore.close_window`.
    """
    _same_task(rt, body)
    p, start = rt.spec.time_precision, body.window_start
    if start < 0 or start % p:
        raise InvalidRequest(f"a window starts at a multiple of {p} s")
    rt.store.ensure_window(start, int(time.time() * 1000))
    row = rt.store.window(start)
    assert row is not None
    if row.state == "closed":
        if row.close_digest != digest:
            raise InvalidRequest(f"window {start} of {rt.name!r} is already closed")
        return ClosedWindow(row, row.releasable, row.share_digest, fresh=False)
    helper = Helper(rt.task, rt.verify_key)
    bucket = helper.bucket(start)
    bucket.agg_share, bucket.count, bucket.checksum = row.agg, row.count, row.checksum
    req = AggregateShareReq(rt.task_id, start, p, body.report_count, bytes(body.checksum))
    try:
        share = helper.aggregate_share(req)
        releasable = True
    except InvalidBatchSize:  # closed all the same, never released
        if (row.count, row.checksum) != (req.report_count, req.checksum):
            raise InvalidRequest("the aggregators disagree on the reports of this window") from None
        share, releasable = rt.vdaf.encode_agg_share(row.agg), False
    except BatchMismatch as exc:
        raise InvalidRequest("the aggregators disagree on the reports of this window") from exc
    return ClosedWindow(row, releasable, hashlib.sha256(share).hexdigest(), fresh=True)
