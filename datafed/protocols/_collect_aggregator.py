"""State both aggregators keep for a collection task: windows, report IDs, batches.

Pure and in memory: a node persists what it needs (the node service, a later
task).  Each window is a :class:`Bucket`; a report ID, once committed or rejected
after verification, is never aggregated again (DAP §2.3 replay protection); a
collected window takes no more output shares (§4.5.2.4) and is never released
twice (§4.6.1 ``batchOverlap``).
"""

from __future__ import annotations

from dataclasses import dataclass

from datafed.protocols._collect_types import (
    BatchInvalid,
    BatchOverlap,
    Bucket,
    CollectTask,
    InvalidBatchSize,
    ReportError,
)
from datafed.protocols._prio3_types import Vec


@dataclass(frozen=True)
class WindowStats:
    """Public per-window numbers (what a ledger entry records)."""

    start: int
    report_count: int
    rejected: dict[ReportError, int]
    collected: bool

    @property
    def rejected_count(self) -> int:
        """All rejections in the window."""
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Batch:
    """The merged buckets of one interval at one aggregator."""

    agg_share: Vec
    report_count: int
    checksum: bytes
    rejected_count: int
    windows: tuple[int, ...]


class AggregatorState:
    """Buckets and replay state of one aggregator for one task.

    Parameters
    ----------
    task : CollectTask
        The task.
    verify_key : bytes
        The VDAF verification key shared by the two aggregators (secret).
    """

    def __init__(self, task: CollectTask, verify_key: bytes) -> None:
        if len(verify_key) != task.vdaf.VERIFY_KEY_SIZE:
            raise ValueError("verify key has the wrong size for the task's VDAF")
        self.task = task
        self._verify_key = verify_key
        self._buckets: dict[int, Bucket] = {}
        self._seen: set[bytes] = set()  # report IDs aggregated or rejected after verification

    def bucket(self, window: int) -> Bucket:
        """The bucket of a window start, created empty on first use."""
        b = self._buckets.get(window)
        if b is None:
            b = Bucket(self.task.vdaf.agg_init())
            self._buckets[window] = b
        return b

    def is_collected(self, time: int) -> bool:
        """Whether the window of ``time`` was already collected."""
        b = self._buckets.get(self.task.window(time))
        return b is not None and b.collected

    def was_seen(self, report_id: bytes) -> bool:
        """Whether a report ID already went through verification here."""
        return report_id in self._seen

    def mark_seen(self, report_id: bytes) -> None:
        """Remember a report ID for replay checks."""
        self._seen.add(report_id)

    def windows(self) -> list[WindowStats]:
        """Every window with reports or rejections, oldest first."""
        return [
            WindowStats(start, b.count, dict(b.rejected), b.collected)
            for start, b in sorted(self._buckets.items())
        ]

    def interval_windows(self, start: int, duration: int) -> tuple[int, ...]:
        """Window starts of an interval; it must be whole aligned windows (DAP §5.1)."""
        p = self.task.time_precision
        for v in (start, duration):
            if isinstance(v, bool) or not isinstance(v, int):
                raise BatchInvalid("batch interval must be integers")
        if start < 0 or duration < p or start % p or duration % p:
            raise BatchInvalid(f"batch interval must be whole windows of {p} s")
        return tuple(range(start, start + duration, p))

    def batch(self, start: int, duration: int, *, allow_collected: bool = False) -> Batch:
        """Merge the buckets of an interval after the collection checks (DAP §4.6.1).

        Raises
        ------
        BatchInvalid
            The interval is not whole aligned windows.
        BatchOverlap
            A window was already collected (unless ``allow_collected``).
        InvalidBatchSize
            Fewer verified reports than the task's minimum batch size.
        """
        windows = self.interval_windows(start, duration)
        buckets = [self._buckets.get(w) for w in windows]
        if not allow_collected and any(b is not None and b.collected for b in buckets):
            raise BatchOverlap("a window of this interval was already collected")
        present = [b for b in buckets if b is not None]
        count = sum(b.count for b in present)
        if count < self.task.min_batch_size:
            raise InvalidBatchSize(
                f"batch has {count} verified reports, the task needs {self.task.min_batch_size}"
            )
        checksum = bytes(32)
        for b in present:
            checksum = bytes(x ^ y for x, y in zip(checksum, b.checksum, strict=True))
        agg = self.task.vdaf.merge([b.agg_share for b in present])
        rejected = sum(sum(b.rejected.values()) for b in present)
        return Batch(agg, count, checksum, rejected, windows)

    def close(self, windows: tuple[int, ...]) -> None:
        """Mark windows collected: no output share is committed to them any more."""
        for w in windows:
            self.bucket(w).collected = True
