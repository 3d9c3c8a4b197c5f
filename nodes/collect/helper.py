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

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from datafed.collect import ReportBinding, SealedShare, SealError, ShareOpener
from datafed.proto.v1 import collect_pb2
from datafed.protocols import (
    AggregateShareReq,
    AggregationJobInit,
    AggregationJobResp,
    BatchMismatch,
    Helper,
    InvalidBatchSize,
    InvalidMessage,
    Leader,
    ReportError,
    VerifyInit,
)
from nodes.collect.runtime import TaskRuntime
from nodes.collect.storage import WindowDelta, WindowRow
from nodes.errors import InvalidRequest

__all__ = ["ClosedWindow", "body_digest", "close_at_helper", "run_job", "window_deltas"]

DECRYPT_ERROR = "hpke_decrypt_error"


def body_digest(msg: collect_pb2.AggregateInitRequest | collect_pb2.CloseWindowRequest) -> str:
    """Hex SHA-256 of a Leader request without its header (the same across retries)."""
    raw = msg.SerializeToString(deterministic=True)
    bare = type(msg).FromString(raw)
    bare.ClearField("header")
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def run_job(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest, now: int
) -> collect_pb2.AggregateInitResponse:
    """Process (or answer again) one aggregation job, durably; blocking (run in a thread)."""
    _same_task(rt, body)
    job_id = bytes(body.job_id)
    if len(job_id) != 16:
        raise InvalidRequest("aggregation job id must be 16 bytes")
    digest = bytes.fromhex(body_digest(body))
    done = rt.store.helper_job(job_id)
    if done is not None:
        if done[0] != digest:
            raise InvalidRequest("aggregation job id reused for a different job")
        return collect_pb2.AggregateInitResponse.FromString(done[1])
    ids = [bytes(m.report_id) for m in body.inits]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("an aggregation job repeats a report ID; nothing was aggregated")
    helper = Helper(rt.task, rt.verify_key)
    windows = {rt.task.window(m.time) for m in body.inits}
    helper.close(tuple(rt.store.closed_among(windows)))
    for rid in rt.store.seen_among(ids):
        helper.mark_seen(rid)
    inits, undecryptable = _open_shares(rt, body)
    try:
        resp = helper.handle_init(AggregationJobInit(rt.task_id, job_id, tuple(inits)), now)
    except InvalidMessage as exc:
        raise InvalidRequest("malformed aggregation job; nothing was aggregated") from exc
    out, seen, undecrypted_in = _answer(rt, body, resp, undecryptable)
    deltas = window_deltas(helper)
    for w, n in undecrypted_in.items():
        deltas.setdefault(w, WindowDelta()).rejected[DECRYPT_ERROR] = n
    rt.store.commit_helper_job(
        job_id, digest, out.SerializeToString(), seen, deltas, int(time.time() * 1000)
    )
    return out


def _same_task(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest | collect_pb2.CloseWindowRequest
) -> None:
    if bytes(body.task_id) != rt.task_id:
        raise InvalidRequest(
            f"task {rt.name!r} has another task ID here: the aggregators' configurations differ"
        )


def _open_shares(
    rt: TaskRuntime, body: collect_pb2.AggregateInitRequest
) -> tuple[list[VerifyInit], set[bytes]]:
    """Open each report's sealed Helper share; the IDs of those that do not open."""
    opener = ShareOpener(rt.x25519)
    inits, undecryptable = [], set()
    for m in body.inits:
        rid, public = bytes(m.report_id), bytes(m.public_share)
        try:
            share = opener.open(
                ReportBinding(rt.task_id, rid, m.time, public),
                SealedShare(bytes(m.helper_enc), bytes(m.helper_ciphertext)),
            )
        except SealError:
            undecryptable.add(rid)  # rejected below; its ID is not burnt (it was not proven)
            continue
        inits.append(VerifyInit(rid, m.time, public, share, bytes(m.payload)))
    return inits, undecryptable


def _answer(
    rt: TaskRuntime,
    body: collect_pb2.AggregateInitRequest,
    resp: AggregationJobResp,
    undecryptable: set[bytes],
) -> tuple[collect_pb2.AggregateInitResponse, list[bytes], dict[int, int]]:
    """The answer, report by report; the IDs verified and undecryptable reports per window."""
    answers = {v.report_id: v for v in resp.verify_resps}
    out = collect_pb2.AggregateInitResponse(job_id=body.job_id)
    seen, undecrypted_in = [], dict[int, int]()
    for m in body.inits:
        rid = bytes(m.report_id)
        if rid in undecryptable:
            w = rt.task.window(m.time)
            undecrypted_in[w] = undecrypted_in.get(w, 0) + 1
            out.resps.add(report_id=rid, error=DECRYPT_ERROR)
            continue
        v = answers[rid]
        if v.payload is not None or v.error is ReportError.VDAF_VERIFY_ERROR:
            seen.append(rid)  # went through verification: never again
        out.resps.add(
            report_id=rid, payload=v.payload or b"", error=v.error.value if v.error else ""
        )
    return out, seen, undecrypted_in


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
