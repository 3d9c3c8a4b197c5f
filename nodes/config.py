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
    "NodeConfig",
    "NodeSection",
    "NodeTlsFiles",
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
    """Differential privacy for a dataset: noise on every release, one budget per requester.

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
        """``(epsilon, delta)`` per requester."""
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
    #: Refuse releases whose row set differs from an earlier one by 1..k-1 rows.
    differencing_defence: bool = True
    #: Models a training job may use: ``"mlp"`` (datafed's tabular MLP, any widths) or
    #: ``"package.module:factory"`` references. A factory is code this node's SuperNode
    #: imports and runs, so list only code the agency installed and trusts (docs/training.md).
    allowed_models: list[str] = ["mlp"]
    #: Agencies (node names) that must approve every use of this dataset.
    required_signoff: list[PartyName] = []

    @field_validator("allowed_protections")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        from datafed.query.modes import MODES

        unknown = sorted(set(v) - set(MODES))
        if unknown:
            raise ValueError(f"unknown protection mode(s) {unknown}; known: {sorted(MODES)}")
        return v

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

    #: The dataset's name, as analysts write it in ``FROM``.
    name: Ident
    #: A SQLite file (opened read-only); give this or ``url``.
    path: Annotated[Path, AfterValidator(_resolve)] | None = None
    #: Any SQLAlchemy URL, e.g. ``postgresql+psycopg://...``; give this or ``path``.
    url: str | None = None
    #: The table to read; default: the dataset's name.
    table: Ident | None = None
    #: Columns exposed to analysts; default: every column of the table.
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


class NodeConfig(_Strict):
    """The whole node configuration file."""

    node: NodeSection
    tls: NodeTlsFiles
    datasets: list[DatasetConfig] = Field(min_length=1)
    #: What this node signs off on for other agencies (``[[signoff]]`` tables).
    signoff: list[SignOffGrant] = []
    #: Logs of peer nodes this node witnesses (``[witness]``).
    witness: WitnessSection | None = None
    #: Witnesses this node publishes its checkpoints to (``[publish]``).
    publish: PublishSection | None = None

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
