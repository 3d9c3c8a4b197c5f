"""Tasks, reports and messages of windowed Prio3 collection, in the spirit of DAP.

The shapes follow draft-ietf-ppm-dap-18 (read, not copied): a task (§4.2) fixes
the VDAF, the time precision and the minimum batch size; a report (§4.4) carries
a 16-byte report ID (the VDAF nonce), a timestamp, the public share and one input
share per aggregator; aggregation jobs (§4.5) carry ``VerifyInit`` / ``VerifyResp``
per report; batch buckets (§4.5.2.4) are the task's time windows, each holding an
aggregate share, a report count and a checksum (XOR of SHA-256 of the report
IDs); a collection (§4.6) asks for an aligned interval of windows.

Differences from DAP, on purpose: no HTTP, no HPKE here (the transport seals the
Helper's input share and the aggregate shares; see the node service), the VDAF
application context is ``b"datafed-collect/1" || task_id``, and each window also
counts the reports it rejected, so that rejections can be ledgered.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_types import Vec
from datafed.protocols.errors import MachineError

REPORT_ID_SIZE = 16
TASK_ID_SIZE = 32
CTX_LABEL = b"datafed-collect/1"


class ReportError(enum.Enum):
    """Why one report was not aggregated (DAP §4.1 ``ReportError``, the subset used here)."""

    INVALID_MESSAGE = "invalid_message"
    REPORT_REPLAYED = "report_replayed"
    REPORT_DROPPED = "report_dropped"
    REPORT_TOO_EARLY = "report_too_early"
    BATCH_COLLECTED = "batch_collected"
    TASK_NOT_STARTED = "task_not_started"
    TASK_EXPIRED = "task_expired"
    VDAF_VERIFY_ERROR = "vdaf_verify_error"


class CollectionError(MachineError):
    """A collection request that cannot be served (the requester may retry or fix it)."""


class BatchInvalid(CollectionError):
    """The interval is not a whole number of aligned windows."""


class BatchOverlap(CollectionError):
    """A window of the interval was already collected."""


class InvalidBatchSize(CollectionError):
    """Fewer verified reports than the task's minimum batch size."""


class BatchMismatch(CollectionError):
    """The aggregators disagree on the reports in the batch (count or checksum)."""


@dataclass(frozen=True)
class CollectTask:
    """A collection task, configured identically at both aggregators.

    Attributes
    ----------
    task_id : bytes
        32 bytes, unique.
    vdaf : Prio3
        The VDAF and its parameters.
    time_precision : int
        Window length in seconds; reports are bucketed by ``time // time_precision``.
    min_batch_size : int
        Smallest number of verified reports a collection may release.
    start, end : int or None
        Task interval in seconds (``[start, end)``); reports outside are refused.
    max_skew : int
        How far (seconds) a report's time may be ahead of the aggregator's clock.
    """

    task_id: bytes
    vdaf: Prio3[Any, Any]
    time_precision: int
    min_batch_size: int
    start: int | None = None
    end: int | None = None
    max_skew: int = 60

    def __post_init__(self) -> None:
        if len(self.task_id) != TASK_ID_SIZE:
            raise ValueError(f"task_id must be {TASK_ID_SIZE} bytes")
        if self.vdaf.SHARES != 2:
            raise ValueError("collection runs with exactly two aggregators")
        if self.time_precision < 1 or self.min_batch_size < 1 or self.max_skew < 0:
            raise ValueError("time_precision and min_batch_size must be positive")

    @property
    def ctx(self) -> bytes:
        """The VDAF application context: binds every report to this task."""
        return CTX_LABEL + self.task_id

    def window(self, time: int) -> int:
        """Start (seconds) of the window holding ``time``."""
        return time - time % self.time_precision

    def check_time(self, time: int, now: int) -> ReportError | None:
        """The time checks of DAP §4.5.1.4 (task interval, clock skew)."""
        if isinstance(time, bool) or not isinstance(time, int) or time < 0:
            return ReportError.INVALID_MESSAGE
        if self.start is not None and time < self.start:
            return ReportError.TASK_NOT_STARTED
        if self.end is not None and time >= self.end:
            return ReportError.TASK_EXPIRED
        if time > now + self.max_skew:
            return ReportError.REPORT_TOO_EARLY
        return None


@dataclass(frozen=True)
class Report:
    """A client's upload: metadata, public share and both (encoded) input shares."""

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    helper_share: bytes

    def __repr__(self) -> str:
        return f"Report(id={self.report_id.hex()}, time={self.time})"


def shard_report(task: CollectTask, measurement: Any, time: int) -> Report:
    """Client side: shard ``measurement`` into a report for ``task`` (fresh ID and randomness).

    Parameters
    ----------
    task : CollectTask
        The task.
    measurement : Any
        A measurement of the task's VDAF.
    time : int
        The measurement time (seconds since the epoch).

    Returns
    -------
    Report
        Ready to upload to the Leader.
    """
    vdaf = task.vdaf
    report_id = secrets.token_bytes(REPORT_ID_SIZE)
    public, shares = vdaf.shard(
        task.ctx, measurement, report_id, secrets.token_bytes(vdaf.RAND_SIZE)
    )
    return Report(
        report_id,
        time,
        vdaf.encode_public_share(public),
        vdaf.encode_input_share(shares[0]),
        vdaf.encode_input_share(shares[1]),
    )


@dataclass(frozen=True)
class VerifyInit:
    """Leader to Helper, per report: the Helper's report share and the Leader's message."""

    report_id: bytes
    time: int
    public_share: bytes
    helper_share: bytes
    payload: bytes


@dataclass(frozen=True)
class AggregationJobInit:
    """Leader to Helper: one aggregation job over a batch of reports."""

    task_id: bytes
    job_id: bytes
    verify_inits: tuple[VerifyInit, ...]


@dataclass(frozen=True)
class VerifyResp:
    """Helper to Leader, per report: ``continue`` with a payload, or ``reject`` with an error."""

    report_id: bytes
    payload: bytes | None
    error: ReportError | None = None


@dataclass(frozen=True)
class AggregationJobResp:
    """Helper to Leader: one response per report, in the request's order."""

    job_id: bytes
    verify_resps: tuple[VerifyResp, ...]


@dataclass(frozen=True)
class AggregateShareReq:
    """Leader to Helper: the batch to release and what the Leader holds for it."""

    task_id: bytes
    start: int
    duration: int
    report_count: int
    checksum: bytes


@dataclass(frozen=True)
class Collection:
    """What the collector receives for one interval (both encoded aggregate shares)."""

    start: int
    duration: int
    report_count: int
    rejected_count: int
    leader_share: bytes
    helper_share: bytes


@dataclass
class Bucket:
    """One window at one aggregator (DAP §4.5.2.4 batch bucket, plus rejections)."""

    agg_share: Vec
    count: int = 0
    checksum: bytes = bytes(32)
    rejected: dict[ReportError, int] = field(default_factory=dict)
    collected: bool = False

    def commit(self, vdaf: Prio3[Any, Any], report_id: bytes, out_share: Vec) -> None:
        """Add one verified output share."""
        self.agg_share = vdaf.agg_update(self.agg_share, out_share)
        self.count += 1
        self.checksum = xor_checksum(self.checksum, report_id)

    def reject(self, error: ReportError) -> None:
        """Count one rejected report."""
        self.rejected[error] = self.rejected.get(error, 0) + 1


def xor_checksum(checksum: bytes, report_id: bytes) -> bytes:
    """``checksum XOR SHA-256(report_id)`` (DAP §4.5.2.4)."""
    digest = hashlib.sha256(report_id).digest()
    return bytes(a ^ b for a, b in zip(checksum, digest, strict=True))


def unshard_collection(task: CollectTask, collection: Collection) -> Any:
    """Collector side: the aggregate result of a collection.

    Parameters
    ----------
    task : CollectTask
        The task.
    collection : Collection
        From :meth:`Leader.finish_collection`.

    Returns
    -------
    Any
        The VDAF's aggregate result over ``collection.report_count`` reports.
    """
    vdaf = task.vdaf
    shares = [vdaf.decode_agg_share(collection.leader_share)]
    shares.append(vdaf.decode_agg_share(collection.helper_share))
    return vdaf.unshard(shares, collection.report_count)
