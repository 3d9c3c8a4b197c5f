"""The Flower run configuration of a datafed training job, shared by ServerApp and ClientApp.

A Flower run carries a flat ``run_config`` of TOML scalars. Every key our apps read is
declared here once, with its default; :func:`fab_pyproject` writes the same defaults into
the Flower App's ``pyproject.toml`` (``flwr run`` only lets a run override declared keys).

Keys (kebab-case, as Flower writes them)::

    num-server-rounds   rounds of FedAvg (or the chosen strategy)
    model               "mlp:16" etc.; n-features inputs; seed for the initial weights
    local-epochs, batch-size, lr            each agency's local training
    secagg              Flower's SecAgg+ workflow on (default) or plain FedAvg messages
    secagg-shares, secagg-threshold         SecAgg+ shares / reconstruction threshold
                        (fractions of the sampled nodes, as SecAggPlusWorkflow accepts)
    secagg-max-weight, secagg-clip          SecAgg+ quantisation bounds
    stage-timeout       seconds to wait for replies per message exchange (0: forever)
    eval-every          federated evaluation every N rounds (0: after the last round only)
    strategy            "fedavg", "fedprox", "fedadam", ... or "package.module:factory"
    min-nodes           nodes that must be connected before training starts
    datafed             our node mods on (policy, ledger, budget, DP); off = plain Flower
    bundle              base64 TrainingBundle: the analyst's signed request per node
    sim-data            simulation only: "flood:SEED" synthetic agencies per partition
    sim-nodes           simulation only: JSON list of node.toml paths, one per partition
    result-path         where the ServerApp also writes its JSON result ("" = log only)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

__all__ = ["ANALYST_KEYS", "DEFAULT_CLIENTAPP", "RunSettings", "fab_pyproject", "parse_run_config"]

#: The ClientApp a datafed Flower App names (installed at every SuperNode, by reference).
DEFAULT_CLIENTAPP = "nodes.fl.client_app:app"
#: Run-config keys an analyst may set with ``--run-config`` (``flwr run`` style). The
#: others follow from the signed spec (rounds, model, features, SecAgg+) or are datafed's.
ANALYST_KEYS = (
    "local-epochs",
    "batch-size",
    "lr",
    "seed",
    "strategy",
    "eval-every",
    "stage-timeout",
    "secagg-shares",
    "secagg-threshold",
    "secagg-max-weight",
    "secagg-clip",
)
#: Most local epochs per round a run may ask of every agency.
MAX_LOCAL_EPOCHS = 100
#: Flower's templates spell the learning rate ``learning-rate``; both are accepted.
_ALIASES = {"learning-rate": "lr"}

ConfigValue = bool | int | float | str


@dataclass(frozen=True)
class RunSettings:
    """Typed view of a datafed Flower run config (defaults = a plain secure run)."""

    num_server_rounds: int = 3
    model: str = "mlp:16"
    n_features: int = 6
    seed: int = 0
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 0.02
    secagg: bool = True
    secagg_shares: float = 1.0
    secagg_threshold: float = 0.66
    # SecAgg+ (Bell et al., CCS 2020) as Flower quantises it: each value is clipped to
    # +-secagg-clip and quantised to [0, 2^22); sums live modulo 2^32, so at most 2^10
    # nodes fit (Flower's SecAggPlusWorkflow defaults). A node's weight is its example
    # count over secagg-max-weight, which must exceed every node's count.
    secagg_max_weight: float = 100000.0
    secagg_clip: float = 8.0
    stage_timeout: float = 120.0
    eval_every: int = 1
    strategy: str = "fedavg"
    min_nodes: int = 2
    datafed: bool = True
    bundle: str = ""
    sim_data: str = ""
    sim_nodes: str = ""
    result_path: str = ""

    def __post_init__(self) -> None:
        if self.num_server_rounds < 1:
            raise ValueError(f"num-server-rounds must be at least 1, got {self.num_server_rounds}")
        if self.min_nodes < 1:
            raise ValueError(f"min-nodes must be at least 1, got {self.min_nodes}")
        if self.secagg and self.min_nodes < 2:
            raise ValueError("SecAgg+ needs at least 2 nodes (min-nodes >= 2)")
        if not 0 < self.secagg_shares <= 1 or not 0 < self.secagg_threshold <= 1:
            raise ValueError("secagg-shares and secagg-threshold must be fractions in (0, 1]")
        # The run config is the analyst's, unsigned and unchecked by the nodes' policy:
        # bound the work it can make every agency's SuperNode do per round.
        if not 1 <= self.local_epochs <= MAX_LOCAL_EPOCHS:
            raise ValueError(f"local-epochs must be in [1, {MAX_LOCAL_EPOCHS}]")
        if self.batch_size < 1:
            raise ValueError("batch-size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.eval_every < 0:
            raise ValueError(f"eval-every must be >= 0, got {self.eval_every}")
        if self.stage_timeout < 0:
            raise ValueError(f"stage-timeout must be >= 0, got {self.stage_timeout}")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        """Read the known keys from a Flower ``run_config`` (unknown keys are ignored).

        Raises
        ------
        TypeError
            If a value has the wrong type (named by its key).
        """
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in run_config:
                continue
            value = run_config[key]
            default = f.default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            else:
                ok = isinstance(value, str)
            if not ok:
                raise TypeError(
                    f"run config {key!r} must be {type(default).__name__}, "
                    f"got {type(value).__name__}"
                )
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, ConfigValue]:
        """Return the settings as Flower run-config items (kebab-case keys)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def parse_run_config(items: Sequence[str]) -> dict[str, ConfigValue]:
    """Parse ``key=value`` pairs as ``flwr run --run-config`` takes them.

    Each item holds one or more space-separated pairs; values are TOML (``lr=0.01``,
    ``strategy="fedprox"``; a bare word is taken as a string).

    Raises
    ------
    ValueError
        If a pair is malformed, its key is not one of :data:`ANALYST_KEYS`, or its value
        has the wrong type.
    """
    out: dict[str, ConfigValue] = {}
    for item in items:
        for pair in item.split():
            key, sep, text = pair.partition("=")
            key = _ALIASES.get(key.strip(), key.strip())
            if not sep or not key or not text:
                raise ValueError(f"--run-config expects key=value, got {pair!r}")
            if key not in ANALYST_KEYS:
                settable = ", ".join(ANALYST_KEYS)
                raise ValueError(f"run config key {key!r} cannot be set here; settable: {settable}")
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                value = text
            if not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"run config {key!r} must be a number, boolean or string")
            out[key] = value
    try:
        RunSettings.from_run_config(out)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    return out


def _toml_value(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def fab_pyproject(
    serverapp: str = "datafed.fl.server_app:app",
    clientapp: str = DEFAULT_CLIENTAPP,
    name: str = "datafed-fl",
    version: str = "1.0.0",
) -> str:
    """Return the ``pyproject.toml`` of a Flower App whose components are installed modules.

    The Flower App Bundle (FAB) built from it holds no code: the ServerApp and ClientApp
    are imported from the ``datafed`` distribution installed at the SuperLink and at every
    SuperNode, so agencies run only code they installed themselves.
    """
    defaults = RunSettings().to_run_config()
    config = "\n".join(f"{k} = {_toml_value(v)}" for k, v in defaults.items())
    return (
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
        'description = "datafed federated training (components from the installed datafed)"\n'
        'license = "Apache-2.0"\n'
        "dependencies = []\n\n"
        "[tool.flwr.app]\n"
        'publisher = "datafed"\n\n'
        "[tool.flwr.app.components]\n"
        f'serverapp = "{serverapp}"\n'
        f'clientapp = "{clientapp}"\n\n'
        "[tool.flwr.app.config]\n"
        f"{config}\n"
    )
