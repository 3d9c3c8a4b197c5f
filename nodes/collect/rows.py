"""A Leader's stored reports as a job takes them: as columns (:class:`ReportCols`).

:meth:`nodes.collect.storage.CollectStore.claim_job` hands a job's reports to the job
driver as one list per column, transposed from the database's rows in one step: the
driver packs the columns onto the wire (:mod:`nodes.collect.packed`) and into the
batched Leader step without building an object per report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ReportCols", "ReportRow"]


@dataclass(frozen=True)
class ReportRow:
    """A stored report that still has its shares (pending or in a job)."""

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    enc: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class ReportCols:
    """A job's stored reports as columns, in upload order (no object per report).

    Iterating gives one :class:`ReportRow` per report (for callers that want rows).
    """

    ids: list[bytes]
    times: list[int]
    public_shares: list[bytes]
    leader_shares: list[bytes]
    encs: list[bytes]
    ciphertexts: list[bytes]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[ReportRow]:
        cols = (self.ids, self.times, self.public_shares, self.leader_shares, self.encs)
        return (ReportRow(*r) for r in zip(*cols, self.ciphertexts, strict=True))

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]]) -> ReportCols:
        """Rows ``(id, time, public, leader, enc, ct)`` from the database, transposed."""
        if not rows:
            return cls([], [], [], [], [], [])
        ids, times, *blobs = map(list, zip(*rows, strict=True))
        ids, *blobs = (
            c if isinstance(c[0], bytes) else [bytes(x) for x in c]  # PostgreSQL: memoryviews
            for c in (ids, *blobs)
        )
        return cls(ids, times, *blobs)
