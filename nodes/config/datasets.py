"""``[[datasets]]``: where a dataset lives, its column types and its policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from datafed.config.load import ResolvedPath, Strict, resolve_path
from nodes.config.names import Ident, PartyName

__all__ = [
    "ColumnTypeName",
    "DatasetConfig",
    "DatasetPolicy",
    "DpPolicy",
    "EngineName",
    "SparkSource",
]


class DpPolicy(Strict):
    """Differential privacy for a dataset: noise on every release, spent from a budget.

    Every aggregated column needs ``bounds``: values are clamped to them in the query, so one
    row changes a SUM by at most ``max(|lo|, |hi|)`` (the sensitivity that calibrates the
    discrete Laplace noise).
    """

    #: Epsilon each released query spends (discrete Laplace noise scale follows from it).
    epsilon_per_query: float = Field(gt=0, le=10)
    #: Total epsilon one requester may spend on this dataset, over queries and training.
    budget_epsilon: float = Field(gt=0)
    #: Total delta of the budget (Gaussian noise spends delta: training's updates); the
    #: accountant sums epsilons and deltas (basic composition, docs/policy.md).
    budget_delta: float = Field(default=0.0, ge=0, lt=1)
    #: Most delta one job may spend, all its releases together (training: rounds x its
    #: delta); a request over it is refused before admission. Default: ``budget_delta``.
    max_delta_per_job: float | None = Field(default=None, ge=0, lt=1)
    #: Whether federated evaluation may leave this dataset: each evaluation's loss,
    #: accuracy and row count are noised (discrete Laplace) and charged like a training
    #: round (docs/training.md). ``false``: every evaluation is refused before anything runs.
    allow_evaluation: bool = False
    #: Evaluation: each row's loss is clipped to ``[0, evaluation_loss_bound]`` (the
    #: sensitivity of the released loss sum).
    evaluation_loss_bound: float = Field(default=2.0, gt=0, le=100)
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

    @model_validator(mode="after")
    def _delta(self) -> DpPolicy:
        if self.max_delta_per_job is not None and self.max_delta_per_job > self.budget_delta:
            raise ValueError("max_delta_per_job must not exceed budget_delta")
        return self

    @property
    def budget(self) -> tuple[float, float]:
        """``(epsilon, delta)`` of one budget (per dataset or per requester)."""
        return self.budget_epsilon, self.budget_delta

    @property
    def delta_per_job(self) -> float:
        """The most delta one job may spend (``max_delta_per_job``, else ``budget_delta``)."""
        return self.budget_delta if self.max_delta_per_job is None else self.max_delta_per_job


class DatasetPolicy(Strict):
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
    #: *k*: a group whose combined row count over the job's nodes is below it is shown as
    #: suppressed (DP: its noisy count; exact data: applied by the analyst's client, a
    #: publication rule, not a protection -- docs/invisibility.md).
    min_group_size: int = Field(default=5, ge=1)
    #: Declared values of categorical columns: public metadata that lets protected
    #: modes align groups across nodes without revealing which node has which group.
    group_domains: dict[Ident, list[bool | int | float | str]] = {}
    #: Operations the dataset may serve: aggregate queries, and private intersection-sums
    #: (as the identifier side or the value side; see datafed.psi), and federated
    #: training through the node's own Flower SuperNode (see docs/training.md).
    allowed_operations: list[Literal["query", "intersection_sum", "training"]] = ["query"]
    #: Columns an intersection-sum may match on (a person or account identifier). The
    #: size of a side's set is that column's distinct count, so any other column would
    #: release its exact COUNT(DISTINCT) (docs/invisibility.md). Required with
    #: ``intersection_sum``.
    identifier_columns: list[Ident] = []
    #: Differential privacy; ``None`` releases exact aggregates.
    dp: DpPolicy | None = None
    #: Exact datasets: every node that serves this dataset. A query on exact data names
    #: exactly these nodes, so a total is never over a subset that another total could be
    #: subtracted from (docs/invisibility.md). Required for an exact dataset.
    consortium: list[PartyName] = []
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

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in _REMOVED_KEYS.items():
                if key in data:
                    raise ValueError(f"{key} was removed: {why} (docs/invisibility.md)")
        return data

    @model_validator(mode="after")
    def _person_level(self) -> DatasetPolicy:
        if self.person_level and self.dp is None and self.allowed_requesters:
            raise ValueError(
                "person-level data (person_level = true, the default) needs a "
                "[datasets.policy.dp] section: exact aggregates of persons fall to tracker "
                "attacks; set person_level = false only for data that is not about persons"
            )
        if "intersection_sum" in self.allowed_operations and not self.identifier_columns:
            raise ValueError(
                "intersection_sum needs the dataset's identifier_columns: the columns an "
                "intersection may match on (the set size of any other column would be its "
                "exact distinct count)"
            )
        if self.dp is None and self.allowed_requesters and "query" in self.allowed_operations:
            if not self.consortium:
                raise ValueError(
                    "an exact dataset (no [datasets.policy.dp]) needs its consortium: the "
                    "names of every node that serves it (consortium = [...]); its totals are "
                    "released over exactly those nodes"
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


#: Policy keys of earlier releases, refused with the reason they went.
_REMOVED_KEYS = {
    "small_groups": "groups are no longer suppressed per node -- min_group_size applies to "
    "the combined group, and a per-node refusal after admission was an oracle",
    "differencing_defence": "it substituted earlier values without a mark and a second "
    "column bypassed it; exact data is protected by the consortium rule, rows only by DP",
}

#: Column types a dataset declares (docs/stores.md "Typed columns").
ColumnTypeName = Literal["integer", "real", "text", "boolean"]
#: The engines a dataset can live in (docs/stores.md).
EngineName = Literal["sqlite", "duckdb", "postgresql", "spark"]
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class SparkSource(Strict):
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


class DatasetConfig(Strict):
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
    path: ResolvedPath | None = None
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
    #: CSV import: the text that means a missing value (NULL), e.g. ``["", "n/a", "NA"]``;
    #: ``datafed-node import --na`` adds more.
    import_na: list[Annotated[str, Field(max_length=32)]] = Field(default=[""], max_length=64)
    #: What the dataset holds, shown to analysts by ``datafed nodes`` (public metadata).
    description: str = Field(default="", max_length=2000)
    #: What each column means (unit, coding, source), shown to analysts by ``datafed
    #: nodes`` beside its type (public metadata; never data).
    column_descriptions: dict[Ident, Annotated[str, Field(max_length=500)]] = {}
    #: Environment variable holding the database password (never inline in ``url``).
    password_env: str | None = Field(default=None, pattern=_ENV_NAME)
    #: File holding the database password (its first line).
    password_file: ResolvedPath | None = None
    policy: DatasetPolicy = DatasetPolicy()

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "row_id" in data:
            raise ValueError(
                "row_id was removed: it served the differencing defence, which is gone "
                "(docs/invisibility.md); delete the key"
            )
        return data

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
