"""The node's TOML configuration, validated by pydantic.

Example::

    [node]
    name = "water-north"
    agency = "North District Water Office"
    listen = "127.0.0.1:50051"
    state_dir = "state"

    [tls]
    ca = "pki/ca.crt"
    cert = "pki/node/water-north.crt"
    key = "pki/node/water-north.key"
    signing_key = "pki/node/water-north.ed25519"

    [[datasets]]
    name = "pipe_incidents"
    path = "data/water-north.sqlite"      # SQLite; "x.duckdb" is DuckDB (docs/stores.md)
    # or: url = "postgresql://reader@db:5432/water" with password_env = "WATER_NORTH_PG"
    # or: [datasets.spark] master = "spark://...", parquet = "s3a://..." (docs/stores.md)
    columns = ["district", "year", "month", "material", "bursts", "repair_hours"]
    types = { year = "integer", repair_hours = "real" }   # where the database has none
    description = "Pipe bursts per segment and month"      # shown by `datafed nodes`
    column_descriptions = { repair_hours = "hours from report to repair" }

    [datasets.policy]
    allowed_requesters = ["alice"]
    allowed_purposes = ["service-planning"]
    allowed_aggregates = ["sum", "count", "avg"]
    allowed_protections = ["paillier"]
    min_group_size = 5

    [limits]                              # optional: what one request may cost (defaults shown)
    max_values = 200000                   # groups x values per answer
    max_open_jobs_per_requester = 16
    paillier_cache_bytes = 536870912      # analysts' Paillier key tables, all together

    [witness]                             # optional: witness the logs of these peer nodes
    peers = ["pki/node/water-east.crt", "pki/node/water-south.crt"]

    [publish]                             # optional: have witnesses cosign this node's log
    interval_s = 30
    [[publish.witnesses]]
    name = "water-east"
    address = "10.0.0.2:50051"
    cert = "pki/node/water-east.crt"

``[witness]`` makes the node a witness (c2sp.org/tlog-witness) for each peer listed by its
certificate: the log's origin is ``datafed/ledger/<name>`` and its key the Ed25519 key bound
in the certificate, which must be issued by the federation CA (``tls.ca``).  The witness
cosigns as ``datafed/witness/<this node>`` with the node's signing key and keeps its state
in ``state_dir/witness.sqlite``.  ``[publish]`` makes the node ask each listed witness, every
``interval_s`` seconds and once at shutdown, to cosign its latest checkpoint; cosignatures
are stored on the ledger, refusals are logged (a fork or inconsistency as an error).

``[[collect]]`` blocks declare the collection tasks this node aggregates as Leader or
Helper (VDAF, window, minimum batch size, collectors, optional noise): docs/collect.md.
A node that only aggregates needs no ``[[datasets]]``.

``[limits]`` bounds the cost of one request (every field and default:
``docs/policy.md#limits``); a dataset's ``paillier_bits`` lists the key sizes it accepts.
Relative paths resolve against the directory of the config file.  The policy is
default-deny: a dataset with no allowed requester or purpose answers nobody.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datafed.collect import DpSpec, TaskSpec
from datafed.config import load_toml_model, resolve_path
from datafed.query.spec import check_identifier
from datafed.tls import PartyFiles

__all__ = [
    "CollectConfig",
    "CollectDpConfig",
    "CollectPeer",
    "ColumnTypeName",
    "DatasetConfig",
    "DatasetPolicy",
    "DpPolicy",
    "LimitsSection",
    "NodeConfig",
    "NodeSection",
    "NodeTlsFiles",
    "PublishSection",
    "PublishWitness",
    "SparkSource",
    "WitnessSection",
    "load_node_config",
]

Ident = Annotated[str, AfterValidator(check_identifier)]
PartyName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    ctx: dict[str, Any] = info.context or {}
    return resolve_path(value, ctx.get("base_dir"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DpPolicy(_Strict):
    """Differential privacy for a dataset: noise on every release, spent from a budget.

    Every aggregated column needs ``bounds``: values are clamped to them in the query, so one
    row changes a SUM by at most ``max(|lo|, |hi|)`` (the sensitivity that calibrates the
    discrete Laplace noise).
    """

    #: Epsilon each released query spends (discrete Laplace noise scale follows from it).
    epsilon_per_query: float = Field(gt=0, le=10)
    #: Total epsilon one requester may spend on this dataset, over queries and training.
    budget_epsilon: float = Field(gt=0)
    #: Total delta per requester (used by training with Gaussian noise).
    budget_delta: float = Field(default=0.0, ge=0, lt=1)
    #: ``dataset``: one budget for every requester together, so colluding analysts cannot
    #: add up their budgets (one analyst can exhaust it for all); ``requester``: one each.
    budget_scope: Literal["dataset", "requester"] = "dataset"
    #: Clamp range ``[low, high]`` per aggregated column; it sets the sensitivity.
    bounds: dict[Ident, tuple[float, float]] = {}

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for col, (lo, hi) in v.items():
            if not lo <= hi:
                raise ValueError(f"bounds.{col}: low must not exceed high")
        return v

    @property
    def budget(self) -> tuple[float, float]:
        """``(epsilon, delta)`` of one budget (per dataset or per requester)."""
        return self.budget_epsilon, self.budget_delta


class DatasetPolicy(_Strict):
    """Who may use a dataset, for what, and how."""

    #: Analysts (certificate names) who may use the dataset; empty: nobody.
    allowed_requesters: list[PartyName] = []
    #: Declared purposes accepted for this dataset; empty: none.
    allowed_purposes: list[str] = []
    #: Columns that may be read (filtered, grouped, aggregated, trained on); unset: all.
    allowed_columns: list[Ident] | None = None
    #: Aggregate functions a query may apply.
    allowed_aggregates: list[Literal["sum", "count", "avg", "var", "min", "max", "histogram"]] = [
        "sum",
        "count",
        "avg",
    ]
    #: Protection modes results may leave in (``paillier``, ``shares``, ``secagg``,
    #: ``ckks``, ``plain``).
    allowed_protections: list[str] = ["paillier"]
    #: *k*: a group (or whole result) over fewer rows is suppressed or refused.
    min_group_size: int = Field(default=5, ge=1)
    #: What happens to groups under *k*: ``suppress`` them or ``refuse`` the query.
    small_groups: Literal["suppress", "refuse"] = "suppress"
    #: Declared values of categorical columns: public metadata that lets protected
    #: modes align groups across nodes without revealing which node has which group.
    group_domains: dict[Ident, list[bool | int | float | str]] = {}
    #: Operations the dataset may serve: aggregate queries, and private intersection-sums
    #: (as the identifier side or the value side; see datafed.psi), and federated
    #: training through the node's own Flower SuperNode (see nodes.fl.policy).
    allowed_operations: list[Literal["query", "intersection_sum", "training"]] = ["query"]
    #: Differential privacy; ``None`` releases exact aggregates.
    dp: DpPolicy | None = None
    #: Exact datasets: a group whose row set differs from an earlier release by 1..k-1
    #: rows gets that release's values (never a refusal, which would be an oracle).
    differencing_defence: bool = True
    #: Models a training job may use: ``"mlp"`` (datafed's tabular MLP, any widths) or
    #: ``"package.module:factory"`` references. A factory is code this node's SuperNode
    #: imports and runs, so list only code the agency installed and trusts (docs/training.md).
    allowed_models: list[str] = ["mlp"]
    #: Agencies (node names) that must approve every use of this dataset.
    required_signoff: list[PartyName] = []
    #: Whether rows describe persons. Exact aggregates of person-level data fall to tracker
    #: attacks that no k or differencing rule stops (docs/invisibility.md), so such a
    #: dataset must have a ``dp`` section; set ``false`` only for data about things.
    person_level: bool = True
    #: Fewest nodes a query's job statement must name (so one node's aggregate is never
    #: released alone under a protected mode); at least 2.
    min_participants: int = Field(default=3, ge=2, le=64)
    #: Nodes every job on this dataset must include (e.g. all the federation's districts,
    #: so that totals over different subsets of nodes cannot be subtracted).
    required_participants: list[PartyName] = []
    #: Paillier modulus sizes (bits) an analyst's key may have: each size fixes the memory
    #: and CPU one key costs the node (docs/policy.md#limits; NIST SP 800-57: >= 2048).
    paillier_bits: list[Annotated[int, Field(ge=2048, le=8192)]] = Field(
        default=[2048, 3072], min_length=1
    )

    @field_validator("allowed_protections")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        from datafed.modes import MODES

        unknown = sorted(set(v) - set(MODES))
        if unknown:
            raise ValueError(f"unknown protection mode(s) {unknown}; known: {sorted(MODES)}")
        return v

    @model_validator(mode="after")
    def _person_level(self) -> DatasetPolicy:
        if self.person_level and self.dp is None and self.allowed_requesters:
            raise ValueError(
                "person-level data (person_level = true, the default) needs a "
                "[datasets.policy.dp] section: exact aggregates of persons fall to tracker "
                "attacks; set person_level = false only for data that is not about persons"
            )
        return self

    @field_validator("group_domains")
    @classmethod
    def _domains(
        cls, v: dict[str, list[bool | int | float | str]]
    ) -> dict[str, list[bool | int | float | str]]:
        for col, values in v.items():
            if not values or len(values) > 10_000 or len(set(values)) != len(values):
                raise ValueError(f"group_domains.{col}: give 1-10000 distinct values")
        return v


#: Column types a dataset declares (docs/stores.md "Typed columns").
ColumnTypeName = Literal["integer", "real", "text", "boolean"]
#: The engines a dataset can live in (docs/stores.md).
EngineName = Literal["sqlite", "duckdb", "postgresql", "spark"]
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class SparkSource(_Strict):
    """``[datasets.spark]``: a dataset read through Apache Spark (docs/stores.md).

    Give exactly one of ``parquet`` (a file or directory, local or any URI Spark reads:
    ``s3a://``, ``hdfs://``, ...) or ``catalog_table`` (a table of the session's catalogue,
    e.g. ``sensors.readings``).  ``master`` is the cluster (``local[2]``,
    ``spark://host:7077``, ``k8s://https://...``); ``conf`` is passed to the session
    builder as is (``spark.executor.memory``, ``spark.sql.catalog.*``, ...).
    """

    #: The Spark master: ``local[2]``, ``spark://host:7077``, ``k8s://https://...``.
    master: str = Field(default="local[2]", min_length=1, max_length=1000)
    #: A Parquet file or directory (local, or any URI Spark reads); or ``catalog_table``.
    parquet: str | None = Field(default=None, min_length=1, max_length=4000)
    #: A table of the session's catalogue, e.g. ``sensors.readings``; or ``parquet``.
    catalog_table: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$"
    )
    #: Session settings passed to the builder as they are (``spark.executor.memory``, ...).
    conf: dict[str, str] = {}
    #: The Spark application name (shown in the cluster's UI).
    app_name: str = Field(default="datafed-node", min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> SparkSource:
        if (self.parquet is None) == (self.catalog_table is None):
            raise ValueError("give exactly one of 'parquet' or 'catalog_table'")
        if self.parquet is not None and "://" not in self.parquet:
            ctx: dict[str, Any] = info.context or {}
            self.parquet = str(resolve_path(Path(self.parquet), ctx.get("base_dir")))
        return self


class DatasetConfig(_Strict):
    """One dataset this node serves: where it lives, its column types and its policy.

    The engine follows from the source unless ``engine`` names it: ``path`` is a SQLite
    file when it ends in ``.sqlite``, ``.sqlite3`` or ``.db`` and a DuckDB file otherwise
    (DuckDB is the default for new, imported datasets); ``url`` is any SQLAlchemy URL
    (``postgresql://`` uses psycopg 3, the ``postgres`` extra); ``spark`` reads through
    Spark.  A database password never has to sit in ``url``: name an environment variable
    (``password_env``) or a file (``password_file``) that holds it.  ``types`` declares
    column types where the database has none (e.g. a CSV imported as TEXT), and wins over
    the database's own types; every exposed column is checked against it (docs/stores.md).
    """

    #: The dataset's name, as analysts write it in ``FROM``.
    name: Ident
    #: A SQLite file (opened read-only); give this or ``url``.
    path: Annotated[Path, AfterValidator(_resolve)] | None = None
    #: Any SQLAlchemy URL, e.g. ``postgresql+psycopg://...``; give this or ``path``.
    url: str | None = None
    #: Apache Spark over Parquet or a catalogue table, instead of ``path``/``url``.
    spark: SparkSource | None = None
    #: The engine; default: from ``path`` (SQLite by suffix, else DuckDB) or ``url``.
    engine: EngineName | None = None
    #: The table to read; default: the dataset's name.
    table: Ident | None = None
    #: Columns exposed to analysts; default: every column of the table.
    columns: list[Ident] | None = None
    #: Declared column types where the database has none (e.g. a CSV imported as TEXT).
    types: dict[Ident, ColumnTypeName] = {}
    #: What the dataset holds, shown to analysts by ``datafed nodes`` (public metadata).
    description: str = Field(default="", max_length=2000)
    #: What each column means (unit, coding, source), shown to analysts by ``datafed
    #: nodes`` beside its type (public metadata; never data).
    column_descriptions: dict[Ident, Annotated[str, Field(max_length=500)]] = {}
    #: A column holding a stable, unique integer row id (for the differencing defence
    #: where the engine has none of its own: PostgreSQL without an integer primary key,
    #: Spark).
    row_id: Ident | None = None
    #: Environment variable holding the database password (never inline in ``url``).
    password_env: str | None = Field(default=None, pattern=_ENV_NAME)
    #: File holding the database password (its first line).
    password_file: Annotated[Path, AfterValidator(_resolve)] | None = None
    policy: DatasetPolicy = DatasetPolicy()

    @model_validator(mode="after")
    def _source(self) -> DatasetConfig:
        if sum(x is not None for x in (self.path, self.url, self.spark)) != 1:
            raise ValueError(
                "give exactly one of 'path' (SQLite or DuckDB file), 'url' (SQLAlchemy URL) "
                "or 'spark' (a [datasets.spark] table)"
            )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give at most one of 'password_env' or 'password_file'")
        if (self.password_env or self.password_file) and self.url is None:
            raise ValueError("'password_env'/'password_file' need a database 'url'")
        if self.columns is not None:
            unknown = sorted(set(self.column_descriptions) - set(self.columns))
            if unknown:
                raise ValueError(f"column_descriptions names columns not exposed: {unknown}")
        inferred = self._inferred_engine()
        if self.engine is not None and inferred is not None and self.engine != inferred:
            raise ValueError(f"engine {self.engine!r} does not match the source ({inferred})")
        if self.path is not None and self.engine not in (None, "sqlite", "duckdb"):
            raise ValueError(f"engine {self.engine!r} needs a 'url' or 'spark', not a 'path'")
        return self

    def _inferred_engine(self) -> str | None:
        if self.spark is not None:
            return "spark"
        if self.url is not None:
            scheme = self.url.split(":", 1)[0].split("+", 1)[0].lower()
            return {"postgres": "postgresql"}.get(scheme, scheme)
        return None

    @property
    def engine_name(self) -> str:
        """The engine: ``sqlite``, ``duckdb``, ``postgresql``, ``spark`` or a SQLAlchemy dialect."""
        if self.engine is not None:
            return self.engine
        inferred = self._inferred_engine()
        if inferred is not None:
            return inferred
        assert self.path is not None
        return "sqlite" if self.path.suffix.lower() in _SQLITE_SUFFIXES else "duckdb"

    @property
    def table_name(self) -> str:
        """The table to read (defaults to the dataset name)."""
        return self.table or self.name

    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL (without password); SQLite files are opened read-only.

        A bare ``postgresql://`` URL selects psycopg 3.
        """
        if self.url is not None:
            scheme, sep, rest = self.url.partition("://")
            if scheme.lower() in ("postgresql", "postgres") and sep:
                return f"postgresql+psycopg://{rest}"
            return self.url
        assert self.path is not None
        if self.engine_name == "duckdb":
            return f"duckdb:///{self.path}"
        return f"sqlite:///file:{self.path}?mode=ro&uri=true"


class NodeSection(_Strict):
    """Identity and listening address of the node."""

    #: The node's name: the CN of its certificate and its ledger origin.
    name: PartyName
    #: The agency's human-readable name, shown to analysts.
    agency: str = ""
    #: ``host:port`` of the mTLS gRPC server (port 0: any free port).
    listen: str = Field(default="127.0.0.1:50051", pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    #: Folder of the ledger, replay cache and release history.
    state_dir: Annotated[Path, AfterValidator(_resolve)] = Path("state")
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Requests served at once; more wait or are refused (RESOURCE_EXHAUSTED).
    max_concurrent_requests: int = Field(default=64, ge=1)
    #: Sign a ledger checkpoint at most this many seconds after any entry (docs/ledger.md).
    sign_within_s: float = Field(default=1.0, gt=0, le=3600)
    #: Optional plaintext gRPC health endpoint for orchestrators (health service only, no
    #: client certificate), e.g. ``"127.0.0.1:50052"``; unset: health only over mTLS.
    health_listen: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class NodeTlsFiles(PartyFiles):
    """``[tls]``: the node's CA, certificate, keys and, optionally, the CA's revocation list."""

    #: The federation's revocation list (``datafed pki revoke`` publishes ``crl.pem``);
    #: checked on every request and re-read when the file changes.
    crl: Annotated[Path, AfterValidator(_resolve)] | None = None


class SignOffGrant(_Strict):
    """Uses of another agency's dataset that this node approves when asked."""

    #: The agency node whose dataset use this node approves.
    node: PartyName
    #: That node's datasets the approval covers.
    datasets: list[Ident] = Field(min_length=1)
    #: Analysts the approval covers.
    requesters: list[PartyName] = Field(min_length=1)
    #: Purposes the approval covers.
    purposes: list[str] = Field(min_length=1)


class WitnessSection(_Strict):
    """``[witness]``: the peer nodes whose logs this node witnesses (their certificates)."""

    #: Certificates of the peer nodes whose logs this node witnesses.
    peers: list[Annotated[Path, AfterValidator(_resolve)]] = Field(min_length=1)


class PublishWitness(_Strict):
    """One witness this node asks to cosign its checkpoints."""

    #: The witness's name (its certificate's CN).
    name: PartyName
    #: The witness's ``host:port``.
    address: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    #: The witness's certificate (its key verifies the cosignatures).
    cert: Annotated[Path, AfterValidator(_resolve)]
    #: The witness's certificate role.
    role: Literal["node", "witness"] = "node"


class PublishSection(_Strict):
    """``[publish]``: the witnesses to ask and how often (seconds)."""

    #: Seconds between requests for cosignatures.
    interval_s: float = Field(default=30.0, gt=0, le=86_400)
    #: Deadline of each cosignature request, in seconds.
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    witnesses: list[PublishWitness] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PublishSection:
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("publish.witnesses: names must be unique")
        return self


# -- [[collect]]: collection tasks (docs/collect.md) ---------------------------------------
class CollectPeer(_Strict):
    """One aggregator of a collection task: its name, certificate and (Helper) address."""

    #: The aggregator node's name.
    name: PartyName
    #: Its certificate (its key seals the Helper's shares and derives the verify key).
    cert: Annotated[Path, AfterValidator(_resolve)]
    #: ``host:port`` the Leader reaches the Helper at (the Helper's own entry: empty).
    address: str = Field(default="", pattern=r"^([A-Za-z0-9.\-\[\]:]+:\d{1,5})?$")


class CollectCollector(_Strict):
    """An analyst allowed to fetch a task's windows, and for which purposes."""

    #: The analyst's name (its certificate's).
    name: PartyName
    #: The purposes it may fetch windows for.
    purposes: list[str] = Field(min_length=1)


class CollectDpConfig(_Strict):
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
    #: ``task``: one budget for every collector (colluders share it); ``requester``: one each.
    budget_scope: Literal["task", "requester"] = "task"


class CollectConfig(_Strict):
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
    #: A window closes once reports this far past its end have arrived, or this long
    #: (wall clock) after the later of its end and its last report (docs/collect.md).
    close_after_s: int = Field(default=60, ge=0, le=86_400)
    #: Most reports per aggregation job, and per upload request.
    job_size: int = Field(default=1000, ge=1, le=10_000)
    #: Most reports one upload request may carry.
    max_upload: int = Field(default=2_000, ge=1, le=100_000)
    #: The Leader aggregator (takes uploads, drives the Helper).
    leader: CollectPeer
    #: The Helper aggregator (another agency).
    helper: CollectPeer
    #: Gateways (certificate role ``gateway``) that may upload; empty: any gateway.
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


# ------------------------------------------------------------------------- [limits]
class LimitsSection(_Strict):
    """``[limits]``: what one request may cost this node (``docs/policy.md#limits``).

    Every limit is checked before admission where the request alone decides it, so a
    refusal spends no budget and says nothing about the data.
    """

    #: Largest query spec, in bytes.
    max_spec_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Most conditions in a WHERE clause.
    max_predicate_nodes: int = Field(default=256, ge=1, le=4096)
    #: Literals in a WHERE clause in all (SQLite binds at most 32766 parameters).
    max_where_values: int = Field(default=4096, ge=1, le=30_000)
    #: Most declared group keys a protected GROUP BY may span.
    max_domain_keys: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Largest protection parameters (a public key, certificates), in bytes.
    max_params_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: Largest job statement, in bytes.
    max_statement_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Largest sign-off, in bytes.
    max_signoff_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Cost of an answer: values per group (SQLite returns at most 2000 columns), groups
    #: times values, Paillier ciphertexts, and bytes (``None``: the message limit).
    max_components: int = Field(default=512, ge=1, le=1900)
    #: Most values (groups x components) in one answer.
    max_values: int = Field(default=200_000, ge=1)
    #: Most groups in one answer.
    max_groups: int = Field(default=10_000, ge=1)
    #: Most Paillier ciphertexts in one answer.
    max_ciphertexts: int = Field(default=4096, ge=1)
    #: Largest answer in bytes (``None``: the node's message limit).
    max_answer_bytes: int | None = Field(default=None, ge=1024)
    #: Protocol state: open jobs of stepped modes, pending intersection-sums.
    max_open_jobs: int = Field(default=256, ge=1)
    #: Open stepped-mode jobs one requester may hold.
    max_open_jobs_per_requester: int = Field(default=16, ge=1)
    #: Intersection-sums waiting for their last step, in all.
    max_pending_intersections: int = Field(default=16, ge=1)
    #: Intersection-sums waiting for their last step, per requester.
    max_pending_intersections_per_requester: int = Field(default=8, ge=1)
    #: Analysts' Paillier keys: their DJN tables in bytes, keys per requester, idle expiry.
    paillier_cache_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    #: Cached Paillier keys per requester (a new one evicts the requester's own).
    paillier_keys_per_requester: int = Field(default=1, ge=1, le=16)
    #: Seconds a cached key must lie idle before another requester's may evict it.
    paillier_key_idle_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _per_requester(self) -> LimitsSection:
        if self.max_open_jobs_per_requester > self.max_open_jobs:
            raise ValueError("max_open_jobs_per_requester must not exceed max_open_jobs")
        if self.max_pending_intersections_per_requester > self.max_pending_intersections:
            raise ValueError(
                "max_pending_intersections_per_requester must not exceed max_pending_intersections"
            )
        return self


class NodeConfig(_Strict):
    """The whole node configuration file."""

    #: ``[node]``: identity, address, limits of the server.
    node: NodeSection
    #: ``[tls]``: the CA, the node's certificate and keys, the revocation list.
    tls: NodeTlsFiles
    #: ``[[datasets]]``: what the node serves (none on a node that only aggregates
    #: collection tasks).
    datasets: list[DatasetConfig] = []
    #: What this node signs off on for other agencies (``[[signoff]]`` tables).
    signoff: list[SignOffGrant] = []
    #: Logs of peer nodes this node witnesses (``[witness]``).
    witness: WitnessSection | None = None
    #: Witnesses this node publishes its checkpoints to (``[publish]``).
    publish: PublishSection | None = None
    #: Collection tasks this node aggregates (``[[collect]]``, docs/collect.md).
    collect: list[CollectConfig] = []
    #: What one request may cost this node (``[limits]``).
    limits: LimitsSection = LimitsSection()

    @model_validator(mode="after")
    def _unique(self) -> NodeConfig:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("dataset names must be unique")
        if self.publish and any(w.name == self.node.name for w in self.publish.witnesses):
            raise ValueError("publish.witnesses: a node cannot witness its own log")
        tasks = [t.name for t in self.collect]
        if len(set(tasks)) != len(tasks) or set(tasks) & set(names):
            raise ValueError("collect: task names must be unique and differ from dataset names")
        for t in self.collect:
            if self.node.name not in (t.leader.name, t.helper.name):
                raise ValueError(f"collect {t.name!r}: this node is neither leader nor helper")
            if t.leader.name == self.node.name and not t.helper.address:
                raise ValueError(f"collect {t.name!r}: the leader needs helper.address")
        if not self.datasets and not self.collect:
            raise ValueError("give at least one dataset or collection task")
        return self

    def collect_task(self, name: str) -> CollectConfig | None:
        """Return the collection task called ``name``, if any."""
        return next((t for t in self.collect if t.name == name), None)

    def dataset(self, name: str) -> DatasetConfig | None:
        """Return the dataset called ``name``, if any."""
        return next((d for d in self.datasets if d.name == name), None)


def load_node_config(path: Path) -> NodeConfig:
    """Load and validate a node configuration file."""
    return load_toml_model(path, NodeConfig)
