"""Per-job state of multi-step protection modes, in memory, bounded and expiring.

A multi-step mode's Query leaves state behind (secagg keys and the vector to mask, an
aggregator's list of participants); the later ``Step`` calls of the same requester and
job find it here.  The table holds at most ``max_jobs`` jobs, and at most
``per_requester`` of one requester, so that one analyst who never finishes its jobs
cannot lock the others out (``[limits]``, ``docs/policy.md#limits``); each job lives
``ttl_ms`` at most and is dropped when its last step succeeds.  Nothing here is
persisted: a node that restarts forgets its open jobs, which the protocols treat as a
dropout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from datafed.wire.signing import RequestHeader, now_ms
from nodes.errors import QuotaExceeded, Unavailable

__all__ = [
    "DEFAULT_MAX_JOBS",
    "DEFAULT_PER_REQUESTER",
    "DEFAULT_TTL_MS",
    "Job",
    "JobBinding",
    "JobTable",
]

DEFAULT_MAX_JOBS = 256
#: Open jobs one requester may hold (``limits.max_open_jobs_per_requester``).
DEFAULT_PER_REQUESTER = 16
#: As long as the longest request validity (datafed.wire.signing.MAX_LIFETIME_MS).
DEFAULT_TTL_MS = 600_000


@dataclass
class Job:
    """One open job: who asked, for which dataset and mode, and the mode's state."""

    job_id: str
    requester: str
    dataset: str
    mode: str
    purpose: str
    legal_basis: str
    expires_at_ms: int
    state: object
    #: The job statement's digest and roster, the dataset's min_participants and required
    #: nodes: what every later step's mode environment is bound to.
    binding: str = ""
    roster: tuple[str, ...] = ()
    min_participants: int = 2
    required: tuple[str, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def bound(self) -> JobBinding:
        """What this job's steps are bound to."""
        return JobBinding(self.binding, self.roster, self.min_participants, self.required)

    def run(self, step: Callable[[object], bytes]) -> bytes:
        """Run ``step`` on the state, one step of this job at a time."""
        with self.lock:
            return step(self.state)


@dataclass(frozen=True)
class JobBinding:
    """What a job's steps are bound to: its statement's digest and roster, and ``k`` nodes.

    ``required``: the nodes every released total must include (the consortium of exact
    data, the ``required_participants`` under DP); a stepped mode releases nothing without
    any of them.
    """

    binding: str
    roster: tuple[str, ...]
    min_participants: int
    required: tuple[str, ...] = ()


class _Stash:
    """A :class:`~datafed.modes.JobStash` bound to one request."""

    def __init__(
        self, table: JobTable, header: RequestHeader, dataset: str, mode: str, bound: JobBinding
    ) -> None:
        self._table = table
        self._header = header
        self._dataset = dataset
        self._mode = mode
        self._bound = bound

    def put(self, state: object) -> None:
        h = self._header
        self._table.add(
            Job(
                job_id=h.job_id,
                requester=h.requester,
                dataset=self._dataset,
                mode=self._mode,
                purpose=h.purpose,
                legal_basis=h.legal_basis,
                expires_at_ms=self._table.clock() + self._table.ttl_ms,
                state=state,
                binding=self._bound.binding,
                roster=self._bound.roster,
                min_participants=self._bound.min_participants,
                required=self._bound.required,
            )
        )


class JobTable:
    """Open jobs by ``(requester, job_id)``, bounded in all and per requester; thread-safe."""

    def __init__(
        self,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        per_requester: int = DEFAULT_PER_REQUESTER,
        ttl_ms: int = DEFAULT_TTL_MS,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if max_jobs < 1 or ttl_ms < 1 or per_requester < 1:
            raise ValueError(
                f"max_jobs, per_requester and ttl_ms must be positive, got "
                f"{max_jobs}, {per_requester}, {ttl_ms}"
            )
        self.max_jobs = max_jobs
        self.per_requester = min(per_requester, max_jobs)
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._jobs: dict[tuple[str, str], Job] = {}
        self._lock = threading.Lock()

    def stash(self, header: RequestHeader, dataset: str, mode: str, bound: JobBinding) -> _Stash:
        """A stash that files a mode's state under this request's requester and job."""
        return _Stash(self, header, dataset, mode, bound)

    def _purge(self, now: int) -> None:
        for key in [k for k, j in self._jobs.items() if j.expires_at_ms <= now]:
            del self._jobs[key]

    def _room(self, requester: str) -> None:
        """Raise if ``requester`` may not open one more job (lock held, table purged)."""
        held = sum(1 for r, _ in self._jobs if r == requester)
        if held >= self.per_requester:
            raise QuotaExceeded(
                f"{requester} already has {held} unfinished protocol jobs at this node "
                f"(limits.max_open_jobs_per_requester); finish or let them expire first"
            )
        if len(self._jobs) >= self.max_jobs:
            raise Unavailable(
                f"this node holds {self.max_jobs} open protocol jobs; try again later"
            )

    def ensure_room(self, requester: str) -> None:
        """Refuse early (before admission) a job that :meth:`add` would refuse for room."""
        with self._lock:
            self._purge(self.clock())
            self._room(requester)

    def add(self, job: Job) -> None:
        """File ``job``: ValueError if already open, QuotaExceeded/Unavailable if no room."""
        key = (job.requester, job.job_id)
        with self._lock:
            self._purge(self.clock())
            if key in self._jobs:
                raise ValueError(f"job {job.job_id!r} already has protocol state at this node")
            self._room(job.requester)
            self._jobs[key] = job

    def get(self, requester: str, job_id: str) -> Job | None:
        """The open job, or None if unknown or expired."""
        with self._lock:
            self._purge(self.clock())
            return self._jobs.get((requester, job_id))

    def drop(self, requester: str, job_id: str) -> None:
        """Forget a job (its last step succeeded)."""
        with self._lock:
            self._jobs.pop((requester, job_id), None)

    def __len__(self) -> int:
        with self._lock:
            self._purge(self.clock())
            return len(self._jobs)
