"""``[[collect]]``: collection tasks this node aggregates as Leader or Helper (docs/collect.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from datafed.collect import DpSpec, TaskSpec
from datafed.config.load import ResolvedPath, Strict
from nodes.config.names import PartyName

__all__ = [
    "CollectCollector",
    "CollectConfig",
    "CollectDpConfig",
    "CollectPeer",
    "CollectServiceConfig",
]


class CollectServiceConfig(Strict):
    """``[collect_service]``: how this node runs its collection tasks (docs/collect.md).

    Without it (or with no ``database``) each task lives in its SQLite file and one
    process does everything. With a PostgreSQL ``database`` several processes share each
    task: ``serve`` (ledger, releases, closing windows), ``workers`` aggregation worker
    processes it starts (``datafed-node collect-worker``; more may run on other
    machines), and upload front ends (``datafed-node collect-worker --no-jobs``).
    """

    #: ``postgresql://user@host:port/db``: one schema per task (``collect_<task>``).
    database: str = Field(default="", pattern=r"^(postgresql://\S+)?$")
    #: Environment variable holding the database password (none: the URL's or .pgpass).
    password_env: str = ""
    #: Aggregation worker processes ``serve`` starts (PostgreSQL only); 0: ``serve``
    #: aggregates itself.
    workers: int = Field(default=0, ge=0, le=256)
    #: Job drivers per process (jobs in flight to the Helper at once).
    drivers: int = Field(default=4, ge=1, le=64)
    #: How long a claimed job is its worker's before another may take it over (seconds,
    #: database clock); renewed while the worker waits on the Helper.
    lease_s: float = Field(default=30.0, ge=0.5, le=3600)

    @model_validator(mode="after")
    def _check(self) -> CollectServiceConfig:
        if self.workers and not self.database:
            raise ValueError("collect_service.workers needs a PostgreSQL database")
        return self


class CollectPeer(Strict):
    """One aggregator of a collection task: its name, certificate and (Helper) address."""

    #: The aggregator node's name.
    name: PartyName
    #: Its certificate (its key seals the Helper's shares and derives the verify key).
    cert: ResolvedPath
    #: ``host:port`` the Leader reaches the Helper at (the Helper's own entry: empty).
    address: str = Field(default="", pattern=r"^([A-Za-z0-9.\-\[\]:]+:\d{1,5})?$")


class CollectCollector(Strict):
    """An analyst allowed to fetch a task's windows, and for which purposes."""

    #: The analyst's name (its certificate's).
    name: PartyName
    #: The purposes it may fetch windows for.
    purposes: list[str] = Field(min_length=1)


class CollectDpConfig(Strict):
    """Noise each aggregator adds at every release, charged to the collector's budget."""

    #: Discrete Laplace (pure epsilon) or discrete Gaussian (zCDP rho) noise.
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    #: Epsilon of one release (Laplace).
    epsilon: float | None = Field(default=None, gt=0, le=10)
    #: zCDP rho of one release (Gaussian).
    rho: float | None = Field(default=None, gt=0, le=10)
    #: Delta when rho is converted to (epsilon, delta) for the budget (Gaussian).
    delta: float = Field(default=1e-9, gt=0, lt=1)
    #: Reports one device may send per window (the sensitivity).
    contributions: int = Field(default=1, ge=1, le=100_000)
    #: Total epsilon the task's releases may spend.
    budget_epsilon: float = Field(gt=0)
    #: Total delta the task's releases may spend (Gaussian: each release spends ``delta``).
    budget_delta: float = Field(default=0.0, ge=0, lt=1)
    #: ``task``: one budget for every collector (colluders share it); ``requester``: one each.
    budget_scope: Literal["task", "requester"] = "task"


class CollectConfig(Strict):
    """``[[collect]]``: a collection task this node aggregates, as Leader or Helper."""

    #: Also the task's file name (``state_dir/collect/<name>.sqlite``) and ledger dataset.
    name: PartyName
    #: The Prio3 variant (docs/prio3.md).
    vdaf: Literal["count", "sum", "sumvec", "histogram", "multihotcountvec"]
    #: Sum: the largest measurement a device may report.
    max_measurement: int | None = Field(default=None, ge=1)
    #: SumVec, Histogram, MultihotCountVec: the vector length (buckets).
    length: int | None = Field(default=None, ge=1, le=100_000)
    #: MultihotCountVec: the most ones one report may hold.
    max_weight: int | None = Field(default=None, ge=1)
    #: Vector variants: the gadget chunk length (default: the draft's optimum).
    chunk_length: int | None = Field(default=None, ge=1)
    #: Window length in seconds: reports are aggregated per window.
    time_precision_s: int = Field(default=300, ge=1, le=86_400 * 31)
    #: Fewest valid reports a window needs before it is released.
    min_batch_size: int = Field(default=100, ge=1)
    #: First report time the task accepts (ISO time with zone, or seconds).
    start: datetime | int | None = None
    #: Last report time the task accepts.
    end: datetime | int | None = None
    #: How far a report's time may lie ahead of the Leader's clock, in seconds.
    max_skew_s: int = Field(default=60, ge=0, le=86_400)
    #: A window closes, reports or not, once the task clock (the newest report time, run on
    #: by the wall clock while uploads are silent) is this far past its end (docs/collect.md).
    close_after_s: int = Field(default=60, ge=0, le=86_400)
    #: Most reports per aggregation job, and per upload request.
    job_size: int = Field(default=1000, ge=1, le=10_000)
    #: Most reports one upload request may carry.
    max_upload: int = Field(default=2_000, ge=1, le=100_000)
    #: The Leader aggregator (takes uploads, drives the Helper).
    leader: CollectPeer
    #: The Helper aggregator (another agency).
    helper: CollectPeer
    #: Gateways (certificate role ``gateway``) that may upload; empty: any gateway of the
    #: home federation (a partner federation's gateway only if named here).
    uploaders: list[PartyName] = []
    #: Analysts who may fetch windows, with their purposes (``[[collect.collectors]]``).
    collectors: list[CollectCollector] = []
    #: Noise added at every release (``[collect.dp]``); none: exact windows.
    dp: CollectDpConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> CollectConfig:
        if self.close_after_s < self.max_skew_s:
            raise ValueError("close_after_s must be at least max_skew_s")
        if self.dp and (self.dp.epsilon is None) == (self.dp.mechanism == "laplace"):
            raise ValueError("dp: laplace takes epsilon (no rho), gaussian takes rho")
        if self.dp and (self.dp.rho is None) == (self.dp.mechanism == "gaussian"):
            raise ValueError("dp: laplace takes epsilon (no rho), gaussian takes rho")
        if self.dp and self.dp.mechanism == "gaussian" and self.dp.budget_delta < self.dp.delta:
            raise ValueError("dp: gaussian releases spend delta: budget_delta must be >= delta")
        self.spec()  # the VDAF parameters make a task
        return self

    def spec(self) -> TaskSpec:
        """The task's public parameters (what its task ID digests)."""

        def secs(v: datetime | int | None) -> int | None:
            if isinstance(v, datetime):
                if v.tzinfo is None:
                    raise ValueError("give start/end with a time zone (e.g. ...Z)")
                return int(v.timestamp())
            return v

        dp = None
        if self.dp is not None:
            d = self.dp
            dp = DpSpec(d.mechanism, d.epsilon, d.rho, d.delta, d.contributions)
        return TaskSpec(
            name=self.name,
            vdaf=self.vdaf,
            leader=self.leader.name,
            helper=self.helper.name,
            time_precision=self.time_precision_s,
            min_batch_size=self.min_batch_size,
            max_measurement=self.max_measurement,
            length=self.length,
            max_weight=self.max_weight,
            chunk_length=self.chunk_length,
            start=secs(self.start),
            end=secs(self.end),
            max_skew=self.max_skew_s,
            dp=dp,
        )

    def collector_purposes(self, name: str) -> list[str] | None:
        """The purposes ``name`` may collect for, or ``None`` if it is no collector."""
        return next((c.purposes for c in self.collectors if c.name == name), None)
