"""Intersection-sum jobs waiting for their last step at the ids node (bounded, expiring).

The ids side is admitted at Blind and releases at Intersect (:mod:`nodes.psi.servicer`);
between the two, its blinded party waits here, keyed by (requester, job id). The table
holds at most ``limit`` jobs, and at most ``per_requester`` of one requester, so that one
analyst who never finishes cannot lock the others out (``docs/policy.md#limits``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from datafed.psi import IdsParty
from nodes.errors import InvalidRequest, NotFound, QuotaExceeded, Unavailable

__all__ = [
    "MAX_PENDING_JOBS",
    "PENDING_PER_REQUESTER",
    "PENDING_TTL_S",
    "PendingJob",
    "PendingJobs",
]

#: Jobs the ids side keeps between Blind and Intersect; more are refused (UNAVAILABLE).
MAX_PENDING_JOBS = 16
#: Of which one requester may hold (more are refused: RESOURCE_EXHAUSTED).
PENDING_PER_REQUESTER = 8
#: How long a blinded job waits for its Intersect step.
PENDING_TTL_S = 900.0
OPERATION = "intersection_sum"


@dataclass
class PendingJob:
    """An ids-side job between its Blind and Intersect steps."""

    party: IdsParty
    requester: str
    purpose: str
    blind_digest: bytes
    approved_index: int
    expires: float = field(default_factory=lambda: time.monotonic() + PENDING_TTL_S)


class PendingJobs:
    """A bounded table of pending jobs keyed by (requester, job id); entries expire."""

    def __init__(
        self, limit: int = MAX_PENDING_JOBS, per_requester: int = PENDING_PER_REQUESTER
    ) -> None:
        if limit < 1 or per_requester < 1:
            raise ValueError("limit and per_requester must be positive")
        self.limit = limit
        self.per_requester = min(per_requester, limit)
        self._jobs: dict[tuple[str, str], PendingJob] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        for key in [k for k, j in self._jobs.items() if j.expires <= now]:
            del self._jobs[key]

    def _check(self, requester: str, job_id: str) -> None:
        """Refuse a reused job id, a requester over its share, a full table (lock held)."""
        self._purge(time.monotonic())
        if (requester, job_id) in self._jobs:
            raise InvalidRequest(f"job {job_id!r} is already in progress")
        held = sum(1 for r, _ in self._jobs if r == requester)
        if held >= self.per_requester:
            raise QuotaExceeded(
                f"{requester} already has {held} unfinished intersection-sum jobs at this node "
                "(limits.max_pending_intersections_per_requester); finish them or let them "
                "expire first"
            )
        if len(self._jobs) >= self.limit:
            raise Unavailable(
                f"{self.limit} intersection-sum jobs are in progress; try again later"
            )

    def ensure_room(self, requester: str, job_id: str) -> None:
        """Refuse early a job that :meth:`put` would refuse."""
        with self._lock:
            self._check(requester, job_id)

    def put(self, job_id: str, job: PendingJob) -> None:
        """Store a job; InvalidRequest on reuse, QuotaExceeded/Unavailable if no room."""
        with self._lock:
            self._check(job.requester, job_id)
            self._jobs[(job.requester, job_id)] = job

    def pop(self, requester: str, job_id: str) -> PendingJob:
        """Remove and return a job (each is finished once); raise NotFound if absent."""
        with self._lock:
            self._purge(time.monotonic())
            job = self._jobs.pop((requester, job_id), None)
        if job is None:
            raise NotFound(f"no intersection-sum job {job_id!r} in progress (finished or expired)")
        return job

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
