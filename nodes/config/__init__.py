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

One module per section: :mod:`nodes.config.node` (``[node]``, ``[tls]``, ``[[signoff]]``),
:mod:`nodes.config.datasets` (``[[datasets]]`` and their policy), :mod:`nodes.config.ledger`
(``[witness]``, ``[publish]``), :mod:`nodes.config.collect` (``[[collect]]``),
:mod:`nodes.config.limits` (``[limits]``); this module holds the whole file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from datafed.config.load import Strict, load_toml_model
from nodes.config.collect import (
    CollectCollector,
    CollectConfig,
    CollectDpConfig,
    CollectPeer,
    CollectServiceConfig,
)
from nodes.config.datasets import (
    ColumnTypeName,
    DatasetConfig,
    DatasetPolicy,
    DpPolicy,
    EngineName,
    SparkSource,
)
from nodes.config.ledger import PublishSection, PublishWitness, WitnessSection
from nodes.config.limits import LimitsSection
from nodes.config.node import NodeSection, NodeTlsFiles, SignOffGrant

__all__ = [
    "CollectCollector",
    "CollectConfig",
    "CollectDpConfig",
    "CollectPeer",
    "CollectServiceConfig",
    "ColumnTypeName",
    "DatasetConfig",
    "DatasetPolicy",
    "DpPolicy",
    "EngineName",
    "LimitsSection",
    "NodeConfig",
    "NodeSection",
    "NodeTlsFiles",
    "PublishSection",
    "PublishWitness",
    "SignOffGrant",
    "SparkSource",
    "WitnessSection",
    "load_node_config",
]


class NodeConfig(Strict):
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
    #: How the collection tasks run: one process on SQLite, or several on PostgreSQL.
    collect_service: CollectServiceConfig = CollectServiceConfig()
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
        for d in self.datasets:
            if d.policy.consortium and self.node.name not in d.policy.consortium:
                raise ValueError(
                    f"datasets {d.name!r}: the consortium must name this node "
                    f"({self.node.name!r}), which serves the dataset"
                )
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
