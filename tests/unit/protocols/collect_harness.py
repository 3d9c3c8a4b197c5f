"""In-memory harness for windowed collection: one task, a Leader, a Helper, a clock.

No network: messages are handed from one state machine to the other, optionally
through a ``link`` that can drop or tamper with them, as a transport would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datafed.protocols import (
    AggregationJobInit,
    AggregationJobResp,
    CollectTask,
    Helper,
    Leader,
    Prio3,
    Report,
    ReportError,
    shard_report,
    unshard_collection,
)

T0 = 1_700_000_100  # a window boundary for 300-second windows
WINDOW = 300


@dataclass
class Deployment:
    task: CollectTask
    leader: Leader
    helper: Helper
    now: int = T0
    helper_link: Callable[[AggregationJobInit], AggregationJobInit] | None = None
    response_link: Callable[[AggregationJobResp], AggregationJobResp] | None = None
    rejected_uploads: list[ReportError] = field(default_factory=list)

    def upload(self, report: Report) -> ReportError | None:
        error = self.leader.upload(report, self.now)
        if error is not None:
            self.rejected_uploads.append(error)
        return error

    def send(self, measurement: Any, time: int | None = None) -> Report:
        report = shard_report(self.task, measurement, self.now if time is None else time)
        self.upload(report)
        return report

    def aggregate(self, max_reports: int | None = None) -> int:
        """Run aggregation jobs until the queue is empty; returns committed reports."""
        committed = 0
        while (req := self.leader.start_job(self.now, max_reports)) is not None:
            sent = self.helper_link(req) if self.helper_link else req
            resp = self.helper.handle_init(sent, self.now)
            got = self.response_link(resp) if self.response_link else resp
            committed += self.leader.finish_job(got).committed
        return committed

    def collect(self, start: int, duration: int = WINDOW) -> tuple[Any, int, int]:
        """(result, report_count, rejected_count) of one interval."""
        req = self.leader.collect(start, duration)
        share = self.helper.aggregate_share(req)
        collection = self.leader.finish_collection(req, share)
        return (
            unshard_collection(self.task, collection),
            collection.report_count,
            collection.rejected_count,
        )


def deploy(vdaf: Prio3[Any, Any], *, min_batch_size: int = 5, **task_args: Any) -> Deployment:
    task = CollectTask(os.urandom(32), vdaf, WINDOW, min_batch_size, **task_args)
    key = os.urandom(vdaf.VERIFY_KEY_SIZE)
    return Deployment(task, Leader(task, key), Helper(task, key))
