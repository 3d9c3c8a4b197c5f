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
    path = "data/water-north.sqlite"      # or url = "postgresql+psycopg://..."
    columns = ["district", "year", "month", "material", "bursts", "repair_hours"]

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

``[limits]`` bounds the cost of one request (every field and default:
``docs/policy.md#limits``); a dataset's ``paillier_bits`` lists the key sizes it accepts.
Relative paths resolve against the directory of the config file.  The policy is
default-deny: a dataset with no allowed requester or purpose answers nobody.
"""

from __future__ import annotations

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

from datafed.config import load_toml_model, resolve_path
from datafed.query.spec import check_identifier
from datafed.tls import PartyFiles

__all__ = [
    "DatasetConfig",
    "DatasetPolicy",
    "DpPolicy",
    "LimitsSection",
    "NodeConfig",
    "NodeSection",
    "PublishSection",
    "PublishWitness",
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

    epsilon_per_query: float = Field(gt=0, le=10)
    budget_epsilon: float = Field(gt=0)
    budget_delta: float = Field(default=0.0, ge=0, lt=1)
    #: ``dataset``: one budget for every requester together, so colluding analysts cannot
    #: add up their budgets (one analyst can exhaust it for all); ``requester``: one each.
    budget_scope: Literal["dataset", "requester"] = "dataset"
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

    allowed_requesters: list[PartyName] = []
    allowed_purposes: list[str] = []
    allowed_columns: list[Ident] | None = None
    allowed_aggregates: list[Literal["sum", "count", "avg", "var", "min", "max", "histogram"]] = [
        "sum",
        "count",
        "avg",
    ]
    allowed_protections: list[str] = ["paillier"]
    min_group_size: int = Field(default=5, ge=1)
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


class DatasetConfig(_Strict):
    """One dataset this node serves: where it lives and its policy."""

    name: Ident
    path: Annotated[Path, AfterValidator(_resolve)] | None = None
    url: str | None = None
    table: Ident | None = None
    columns: list[Ident] | None = None
    policy: DatasetPolicy = DatasetPolicy()

    @model_validator(mode="after")
    def _source(self) -> DatasetConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' (SQLite file) or 'url' (SQLAlchemy URL)")
        return self

    @property
    def table_name(self) -> str:
        """The table to read (defaults to the dataset name)."""
        return self.table or self.name

    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL; SQLite files are opened read-only."""
        if self.url is not None:
            return self.url
        assert self.path is not None
        return f"sqlite:///file:{self.path}?mode=ro&uri=true"


class NodeSection(_Strict):
    """Identity and listening address of the node."""

    name: PartyName
    agency: str = ""
    listen: str = Field(default="127.0.0.1:50051", pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    state_dir: Annotated[Path, AfterValidator(_resolve)] = Path("state")
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int = Field(default=64, ge=1)
    #: Sign a ledger checkpoint at most this many seconds after any entry (docs/ledger.md).
    sign_within_s: float = Field(default=1.0, gt=0, le=3600)


class SignOffGrant(_Strict):
    """Uses of another agency's dataset that this node approves when asked."""

    node: PartyName
    datasets: list[Ident] = Field(min_length=1)
    requesters: list[PartyName] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)


class WitnessSection(_Strict):
    """``[witness]``: the peer nodes whose logs this node witnesses (their certificates)."""

    peers: list[Annotated[Path, AfterValidator(_resolve)]] = Field(min_length=1)


class PublishWitness(_Strict):
    """One witness this node asks to cosign its checkpoints."""

    name: PartyName
    address: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    cert: Annotated[Path, AfterValidator(_resolve)]
    role: Literal["node", "witness"] = "node"


class PublishSection(_Strict):
    """``[publish]``: the witnesses to ask and how often (seconds)."""

    interval_s: float = Field(default=30.0, gt=0, le=86_400)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    witnesses: list[PublishWitness] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PublishSection:
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("publish.witnesses: names must be unique")
        return self


# ------------------------------------------------------------------------- [limits]
class LimitsSection(_Strict):
    """``[limits]``: what one request may cost this node (``docs/policy.md#limits``).

    Every limit is checked before admission where the request alone decides it, so a
    refusal spends no budget and says nothing about the data.
    """

    #: Request size, per field of a query.
    max_spec_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_predicate_nodes: int = Field(default=256, ge=1, le=4096)
    #: Literals in a WHERE clause in all (SQLite binds at most 32766 parameters).
    max_where_values: int = Field(default=4096, ge=1, le=30_000)
    max_domain_keys: int = Field(default=10_000, ge=1, le=1_000_000)
    max_params_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_statement_bytes: int = Field(default=16 * 1024, ge=1024)
    max_signoff_bytes: int = Field(default=16 * 1024, ge=1024)
    #: Cost of an answer: values per group (SQLite returns at most 2000 columns), groups
    #: times values, Paillier ciphertexts, and bytes (``None``: the message limit).
    max_components: int = Field(default=512, ge=1, le=1900)
    max_values: int = Field(default=200_000, ge=1)
    max_groups: int = Field(default=10_000, ge=1)
    max_ciphertexts: int = Field(default=4096, ge=1)
    max_answer_bytes: int | None = Field(default=None, ge=1024)
    #: Protocol state: open jobs of stepped modes, pending intersection-sums.
    max_open_jobs: int = Field(default=256, ge=1)
    max_open_jobs_per_requester: int = Field(default=16, ge=1)
    max_pending_intersections: int = Field(default=16, ge=1)
    max_pending_intersections_per_requester: int = Field(default=8, ge=1)
    #: Analysts' Paillier keys: their DJN tables in bytes, keys per requester, idle expiry.
    paillier_cache_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    paillier_keys_per_requester: int = Field(default=1, ge=1, le=16)
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

    node: NodeSection
    tls: PartyFiles
    datasets: list[DatasetConfig] = Field(min_length=1)
    #: What this node signs off on for other agencies (``[[signoff]]`` tables).
    signoff: list[SignOffGrant] = []
    #: Logs of peer nodes this node witnesses (``[witness]``).
    witness: WitnessSection | None = None
    #: Witnesses this node publishes its checkpoints to (``[publish]``).
    publish: PublishSection | None = None
    #: What one request may cost this node (``[limits]``).
    limits: LimitsSection = LimitsSection()

    @model_validator(mode="after")
    def _unique(self) -> NodeConfig:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("dataset names must be unique")
        if self.publish and any(w.name == self.node.name for w in self.publish.witnesses):
            raise ValueError("publish.witnesses: a node cannot witness its own log")
        return self

    def dataset(self, name: str) -> DatasetConfig | None:
        """Return the dataset called ``name``, if any."""
        return next((d for d in self.datasets if d.name == name), None)


def load_node_config(path: Path) -> NodeConfig:
    """Load and validate a node configuration file."""
    return load_toml_model(path, NodeConfig)
