"""The analyst's entry point ``train``: one model across a real federation.

``train`` signs one training request per node, writes a Flower App (whose ServerApp and
ClientApp are the installed :mod:`datafed.fl.server_app` and, at every SuperNode, the
ClientApp the app names -- :data:`~datafed.fl.settings.DEFAULT_CLIENTAPP` -- unless ``app``
names another Flower App directory), and submits it with ``flwr run`` to a SuperLink over
TLS: the one named in ``fed.toml`` or by ``superlink``, or one it starts itself for the
job (``start_superlink``). It streams the run's log, reports each round
(:mod:`datafed.fl.progress`), picks out the ServerApp's result line and returns a
:class:`~datafed.fl.result.TrainResult`.

The simulation engine's entry points (``simulate``, ``simulate_settings``) are in
:mod:`datafed.fl.simulation` and ``check_result`` in :mod:`datafed.fl.result`; they are
importable from here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datafed.client.config import FederationConfig, load_federation
from datafed.errors import ConfigError
from datafed.fl.config import FlowerLink
from datafed.fl.errors import TrainingFailed
from datafed.fl.preflight import check_training
from datafed.fl.progress import Progress, parse_progress
from datafed.fl.requests import sign_training_bundle
from datafed.fl.result import RESULT_MARKER, TrainResult, check_result, find_result
from datafed.fl.settings import (
    ANALYST_KEYS,
    ConfigValue,
    RunSettings,
    fab_pyproject,
)
from datafed.fl.simulation import load_client_app, simulate, simulate_settings
from datafed.fl.spec import DpParams, TrainingSpec
from datafed.fl.superlink import FLOWER_ENV, SuperLink
from datafed.wire.statement import new_job_id

__all__ = [
    "check_result",
    "load_client_app",
    "load_fl_federation",
    "simulate",
    "simulate_settings",
    "train",
]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flwr_home(root: Path, link: FlowerLink, ca: Path) -> Path:
    home = root / "flwr-home"
    home.mkdir()
    lines = ["[superlink]", 'default = "datafed"', "", "[superlink.datafed]"]
    lines.append(f"address = {_toml(link.superlink)}")
    if link.insecure:
        print("WARNING: talking to the SuperLink WITHOUT TLS (insecure = true)", file=sys.stderr)
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {_toml(str(link.root_certificates or ca))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return home


def _run_flwr(
    cmd: list[str],
    env: dict[str, str],
    timeout_s: float,
    progress: Callable[[str], None],
    on_progress: Callable[[Progress], None] | None,
    lines: list[str],
) -> None:
    """Run ``flwr run --stream``; collect its log in ``lines`` (kept if it times out)."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    ) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                step = parse_progress(line)
                if step is not None:
                    if on_progress is not None:
                        on_progress(step)
                elif RESULT_MARKER not in line:
                    progress(line)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise TrainingFailed(f"the Flower run did not finish within {timeout_s:g}s") from exc


def _analyst_config(run_config: Mapping[str, ConfigValue] | None) -> dict[str, ConfigValue]:
    cfg = dict(run_config or {})
    refused = sorted(set(cfg) - set(ANALYST_KEYS))
    if refused:
        raise ConfigError(
            f"run config key {refused[0]!r} cannot be set; settable: {', '.join(ANALYST_KEYS)}"
        )
    return cfg


def _superlink_for(link: FlowerLink, ca: Path, root: Path) -> SuperLink:
    if link.superlink_cert is None or link.superlink_key is None:
        raise ConfigError(
            "[flower] superlink_cert and superlink_key are needed to start a SuperLink "
            "(a certificate with role superlink: datafed pki request NAME --role superlink)"
        )
    return SuperLink(
        link.superlink, link.superlink_cert, link.superlink_key, ca, root / "superlink.log"
    )


def _federation(
    federation: str | Path | tuple[FederationConfig, FlowerLink], superlink: str | None
) -> tuple[FederationConfig, FlowerLink]:
    """The federation and its ``[flower]`` table, ``superlink`` replacing its address."""
    if isinstance(federation, (str, Path)):
        return load_fl_federation(Path(federation), superlink)
    fed, link = federation
    if superlink is not None:
        link = link.model_copy(update={"superlink": superlink})
    return fed, link


def _flwr_run(
    root: Path, app: str | Path | None, cfg: Mapping[str, ConfigValue], link: FlowerLink, ca: Path
) -> tuple[list[str], dict[str, str]]:
    """Write the app (datafed's own unless ``app``) and run config under ``root``.

    Returns the ``flwr run --stream`` command and its environment (a ``FLWR_HOME`` that
    names the SuperLink).
    """
    app_dir = Path(app) if app is not None else root / "app"
    if app is None:
        app_dir.mkdir()
        (app_dir / "pyproject.toml").write_text(fab_pyproject(), encoding="utf-8")
    run_config_file = root / "run-config.toml"
    run_config_file.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in cfg.items()))
    bindir = str(Path(sys.executable).parent)  # Flower finds its own scripts by name
    env = {
        **os.environ,
        **FLOWER_ENV,
        "FLWR_HOME": str(_flwr_home(root, link, ca)),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",  # stream Flower's progress lines as they happen
    }
    flwr = str(Path(sys.executable).parent / "flwr")
    cmd = [flwr, "run", str(app_dir), "datafed", "--run-config", str(run_config_file)]
    cmd.append("--stream")
    return cmd, env


def _start(superlink: SuperLink, progress: Callable[[str], None]) -> None:
    try:
        superlink.start()
    except (OSError, RuntimeError) as exc:
        raise TrainingFailed(str(exc)) from exc
    progress(f"SuperLink started on {superlink.address}")


def _write_log(path: Path, superlink_log: Path, lines: Sequence[str]) -> None:
    """Write a started SuperLink's own log first, then the run's."""
    text = superlink_log.read_text(errors="replace") if superlink_log.exists() else ""
    path.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")


def train(
    federation: str | Path | tuple[FederationConfig, FlowerLink],
    *,
    purpose: str,
    rounds: int = 3,
    dataset: str,
    features: Sequence[str],
    label: str,
    app: str | Path | None = None,
    model: str = "mlp:16",
    dp: DpParams | None = None,
    secagg: bool = True,
    strategy: str = "fedavg",
    legal_basis: str = "",
    nodes: Sequence[str] | None = None,
    job_id: str | None = None,
    run_config: Mapping[str, ConfigValue] | None = None,
    superlink: str | None = None,
    start_superlink: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
    on_progress: Callable[[Progress], None] | None = None,
    log_path: Path | None = None,
    preflight: bool = True,
) -> TrainResult:
    """Train one model across the federation's nodes with Flower; return the result.

    Why long: one keyword parameter per training option; the signature is half of it.

    Parameters
    ----------
    federation : str | Path | tuple[FederationConfig, FlowerLink]
        ``fed.toml`` (with a ``[flower]`` table unless ``superlink`` is given) or its
        loaded contents.
    purpose : str
        Declared purpose; every node's policy must allow it.
    rounds : int
        Federated rounds.
    app : str | Path, optional
        A Flower App directory to run instead of datafed's own (its config must declare
        the keys of :class:`~datafed.fl.settings.RunSettings`).
    dataset, features, label : str
        The dataset and the columns (by name) to train on, identical at every node (no
        defaults: name your own).
    model : str
        ``"mlp:16"`` (datafed's tabular MLP) or ``"package.module:factory"``, a
        ``torch.nn.Module`` factory every node must list in ``allowed_models``.
    dp : DpParams, optional
        Local DP per update, charged to each node's privacy budget.
    secagg : bool
        Flower's SecAgg+ (default on): the ServerApp sees only the sum of updates.
    strategy : str
        Flower strategy (see :mod:`datafed.fl.strategies`).
    legal_basis : str
        Declared legal basis, recorded by every node.
    nodes : Sequence[str], optional
        Train on these nodes only (default: every node of the federation).
    job_id : str, optional
        The job's id (default: a fresh random one).
    run_config : Mapping, optional
        Run-config values as ``flwr run --run-config`` takes them, e.g.
        ``{"lr": 0.01, "local-epochs": 1, "batch-size": 64}``; keys from
        :data:`~datafed.fl.settings.ANALYST_KEYS`.
    superlink : str, optional
        ``host:port`` of the SuperLink to join (default: ``[flower] superlink``), or to
        listen on with ``start_superlink``.
    start_superlink : bool
        Start the SuperLink for this job (``[flower] superlink_cert``/``superlink_key``)
        and stop it afterwards; the nodes' SuperNodes must point at its address.
    progress : callable, optional
        Called with each line of the run's log (progress and result lines excluded).
    on_progress : callable, optional
        Called with each :class:`~datafed.fl.progress.Progress` (job opened, each round).
    log_path : Path, optional
        Also write the run's whole log (and a started SuperLink's) there.
    preflight : bool
        Refuse first what the nodes' published policies refuse (no Flower run started).

    Raises
    ------
    ConfigError
        If ``fed.toml`` or the run config is invalid.
    TrainingRefused
        If a node refused (names the node, status and reason), or its published policy
        refuses the job (before any Flower run).
    NodeUnavailable
        If a node does not answer the preflight check.
    TrainingFailed
        If the run failed (the ServerApp's cause) or did not finish in time.
    """
    fed, link = _federation(federation, superlink)
    extra = _analyst_config(run_config)
    try:
        spec = TrainingSpec(
            dataset, tuple(features), label, rounds, dp or DpParams(), model, secagg
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"training spec: {exc}") from exc
    _before_run(fed, link, spec, purpose, nodes, start_superlink, preflight, progress)
    job = job_id or new_job_id("fl")
    bundle = sign_training_bundle(
        fed, spec, purpose=purpose, job_id=job, legal_basis=legal_basis, nodes=nodes
    )
    settings = RunSettings(
        num_server_rounds=rounds,
        model=model,
        n_features=len(spec.feature_columns),
        secagg=secagg,
        strategy=strategy,
        min_nodes=len(nodes) if nodes is not None else len(fed.nodes),
        bundle=bundle,
    )
    cfg = {**settings.to_run_config(), **extra}
    with tempfile.TemporaryDirectory(prefix="datafed-fl-") as tmp:
        root = Path(tmp)
        cmd, env = _flwr_run(root, app, cfg, link, fed.tls.ca)
        started = _superlink_for(link, fed.tls.ca, root) if start_superlink else None
        lines: list[str] = []
        try:
            if started is not None:
                _start(started, progress)
            _run_flwr(cmd, env, link.connect_timeout_s, progress, on_progress, lines)
        finally:
            if started is not None:
                started.stop()
            if log_path is not None:
                _write_log(log_path, root / "superlink.log", lines)
    return check_result(find_result(lines), "\n".join(lines[-40:]))


def _before_run(
    fed: FederationConfig,
    link: FlowerLink,
    spec: TrainingSpec,
    purpose: str,
    nodes: Sequence[str] | None,
    start_superlink: bool,
    preflight: bool,
    progress: Callable[[str], None],
) -> None:
    """What is checked before any Flower run: a SuperLink's files, the nodes' policies."""
    if start_superlink:
        _superlink_for(link, fed.tls.ca, Path("."))  # its files are named before anything runs
    if preflight:
        check_training(fed, spec, purpose, nodes, progress)


def load_fl_federation(
    path: Path, superlink: str | None = None
) -> tuple[FederationConfig, FlowerLink]:
    """Load ``fed.toml``: the federation (nodes, analyst identity) and its ``[flower]`` table.

    Parameters
    ----------
    path : Path
        The federation file.
    superlink : str, optional
        A SuperLink ``host:port`` that replaces ``[flower] superlink`` (the table may then
        be absent).

    Raises
    ------
    ConfigError
        If the file is missing or invalid, or has no ``[flower]`` table and no
        ``superlink`` is given.
    """
    fed = load_federation(path)  # fed.toml is parsed once, [flower] with the rest
    link = fed.flower
    if superlink is not None:
        base = link.model_dump() if link is not None else {}
        link = FlowerLink.model_validate({**base, "superlink": superlink})
    if link is None:
        raise ConfigError(
            f"{path}: flower: a 'flower' table with the SuperLink address is required "
            "(or pass --superlink HOST:PORT)"
        )
    return fed, link
