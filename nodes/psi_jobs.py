"""Policy and per-job state of the node's PsiService (see :mod:`nodes.psi_servicer`).

Pure checks, no I/O: may this requester run an intersection-sum on this dataset's
columns for this purpose; and a bounded, expiring table of jobs waiting for their step 3.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from datafed.pki import Identity
from datafed.psi import IdsParty
from nodes.config import NodeConfig
from nodes.errors import InvalidRequest, NotFound, PermissionDenied, Unavailable

__all__ = ["MAX_PENDING_JOBS", "PENDING_TTL_S", "PendingJob", "PendingJobs", "check_psi"]

#: Jobs the ids side keeps between Blind and Intersect; more are refused (UNAVAILABLE).
MAX_PENDING_JOBS = 16
#: How long a blinded job waits for its Intersect step.
PENDING_TTL_S = 900.0
OPERATION = "intersection_sum"


def check_psi(
    config: NodeConfig,
    exposed: Sequence[str] | None,
    identity: Identity,
    purpose: str,
    dataset: str,
    columns: Sequence[str],
) -> str:
    """Check an intersection-sum request against the dataset's policy.

    Parameters
    ----------
    config
        The node configuration.
    exposed
        The columns the store exposes for ``dataset`` (``None``: unknown dataset).
    identity
        The authenticated caller.
    purpose
        The declared purpose.
    dataset, columns
        What the job reads.

    Returns
    -------
    str
        The reason to record with the approval.

    Raises
    ------
    NodeError
        The refusal, with a message for the caller.
    """
    if identity.role != "analyst":
        raise PermissionDenied(
            f"role {identity.role!r} may not run intersection-sums; need 'analyst'"
        )
    ds = config.dataset(dataset)
    if ds is None or exposed is None:
        raise NotFound(f"unknown dataset {dataset!r}")
    policy = ds.policy
    if OPERATION not in policy.allowed_operations:
        raise PermissionDenied(f"dataset {dataset!r} does not allow intersection_sum")
    if identity.name not in policy.allowed_requesters:
        raise PermissionDenied(f"requester {identity.name!r} is not allowed to use {dataset!r}")
    if purpose not in policy.allowed_purposes:
        raise PermissionDenied(f"purpose {purpose!r} is not allowed for dataset {dataset!r}")
    # Fail closed on what intersection-sum cannot honour yet: a use that needs another
    # agency's approval.  Differential privacy is honoured (see datafed.psi._dp).
    if policy.required_signoff:
        raise PermissionDenied(
            f"dataset {dataset!r} requires sign-off by {', '.join(policy.required_signoff)}; "
            "intersection_sum carries no sign-offs and is refused"
        )
    for col in columns:
        if col not in exposed:
            raise InvalidRequest(f"unknown column {col!r} in dataset {dataset!r}")
        if policy.allowed_columns is not None and col not in policy.allowed_columns:
            raise PermissionDenied(f"column {col!r} of {dataset!r} is not allowed")
    return "policy allows intersection_sum"


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

    def __init__(self, limit: int = MAX_PENDING_JOBS) -> None:
        self.limit = limit
        self._jobs: dict[tuple[str, str], PendingJob] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        for key in [k for k, j in self._jobs.items() if j.expires <= now]:
            del self._jobs[key]

    def ensure_room(self, requester: str, job_id: str) -> None:
        """Refuse early a job that :meth:`put` would refuse."""
        with self._lock:
            self._purge(time.monotonic())
            if (requester, job_id) in self._jobs:
                raise InvalidRequest(f"job {job_id!r} is already in progress")
            if len(self._jobs) >= self.limit:
                raise Unavailable(
                    f"{self.limit} intersection-sum jobs are in progress; try again later"
                )

    def put(self, job_id: str, job: PendingJob) -> None:
        """Store a job; raise Unavailable when the table is full, InvalidRequest on reuse."""
        key = (job.requester, job_id)
        with self._lock:
            self._purge(time.monotonic())
            if key in self._jobs:
                raise InvalidRequest(f"job {job_id!r} is already in progress")
            if len(self._jobs) >= self.limit:
                raise Unavailable(
                    f"{self.limit} intersection-sum jobs are in progress; try again later"
                )
            self._jobs[key] = job

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
