"""The analyst's entry points: ``train`` on a real federation, ``simulate`` on one machine.

``train`` signs one training request per node, writes a Flower App (whose ServerApp and
ClientApp are the installed :mod:`datafed.fl.server_app` and, at every SuperNode, the
ClientApp the app names -- :data:`~datafed.fl.settings.DEFAULT_CLIENTAPP` -- unless ``app``
names another Flower App directory), and submits it with ``flwr run`` to a SuperLink over
TLS: the one named in ``fed.toml`` or by ``superlink``, or one it starts itself for the
job (``start_superlink``). It streams the run's log, reports each round
(:mod:`datafed.fl.progress`), picks out the ServerApp's result line and returns a
:class:`~datafed.fl.result.TrainResult`.

``simulate_settings`` runs the same ServerApp with a ClientApp the caller passes in (this
package never imports the node side) under Flower's simulation engine, for many synthetic
agencies or over real nodes (benchmarks).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datafed.client.config import FederationConfig
from datafed.errors import ConfigError
from datafed.fl.config import FlowerLink, load_fl_federation
from datafed.fl.errors import TrainingFailed, TrainingRefused
from datafed.fl.progress import Progress, parse_progress
from datafed.fl.requests import new_job_id, sign_training_bundle
from datafed.fl.result import RESULT_MARKER, TrainResult, find_result
from datafed.fl.settings import (
    ANALYST_KEYS,
    DEFAULT_CLIENTAPP,
    ConfigValue,
    RunSettings,
    fab_pyproject,
)
from datafed.fl.spec import DpParams, TrainingSpec
from datafed.fl.superlink import SuperLink
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

__all__ = ["check_result", "load_client_app", "simulate", "simulate_settings", "train"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_result(result: TrainResult | None, output_tail: str = "") -> TrainResult:
    """Return a completed result, or raise what went wrong.

    Raises
    ------
    TrainingRefused
        If nodes refused the job (each node's status and reason).
    TrainingFailed
        If the run failed or produced no result.
    """
    if result is None:
        raise TrainingFailed(
            f"the Flower run ended without a result; its output ends:\n{output_tail}"
        )
    if result.status == "refused":
        raise TrainingRefused(result.refusals)
    if result.status != "completed":
        raise TrainingFailed(f"training job {result.job_id} failed: {result.error}")
    return result


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


def train(
    federation: str | Path | tuple[FederationConfig, FlowerLink],
    *,
    purpose: str,
    rounds: int = 3,
    app: str | Path | None = None,
    dataset: str = FLOOD_TABLE,
    features: Sequence[str] = FLOOD_FEATURES,
    label: str = FLOOD_LABEL,
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
) -> TrainResult:
    """Train one model across the federation's nodes with Flower; return the result.

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
        The dataset and the columns (by name) to train on, identical at every node.
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

    Raises
    ------
    ConfigError
        If ``fed.toml`` or the run config is invalid.
    TrainingRefused
        If a node refused (names the node, status and reason).
    TrainingFailed
        If the run failed (the ServerApp's cause) or did not finish in time.
    """
    fed, link = (
        load_fl_federation(Path(federation), superlink)
        if isinstance(federation, (str, Path))
        else federation
    )
    if superlink is not None and not isinstance(federation, (str, Path)):
        link = link.model_copy(update={"superlink": superlink})
    extra = _analyst_config(run_config)
    try:
        spec = TrainingSpec(
            dataset, tuple(features), label, rounds, dp or DpParams(), model, secagg
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"training spec: {exc}") from exc
    job = job_id or new_job_id()
    bundle = sign_training_bundle(
        fed, spec, purpose=purpose, job_id=job, legal_basis=legal_basis, nodes=nodes
    )
    chosen = len(nodes) if nodes is not None else len(fed.nodes)
    settings = RunSettings(
        num_server_rounds=rounds,
        model=model,
        n_features=len(spec.feature_columns),
        secagg=secagg,
        strategy=strategy,
        min_nodes=chosen,
        bundle=bundle,
    )
    cfg = {**settings.to_run_config(), **extra}
    with tempfile.TemporaryDirectory(prefix="datafed-fl-") as tmp:
        root = Path(tmp)
        app_dir = Path(app) if app is not None else root / "app"
        if app is None:
            app_dir.mkdir()
            (app_dir / "pyproject.toml").write_text(fab_pyproject(), encoding="utf-8")
        run_config_file = root / "run-config.toml"
        run_config_file.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in cfg.items()))
        bindir = str(Path(sys.executable).parent)  # Flower finds its own scripts by name
        env = {
            **os.environ,
            "FLWR_HOME": str(_flwr_home(root, link, fed.tls.ca)),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",  # stream Flower's progress lines as they happen
        }
        flwr = str(Path(sys.executable).parent / "flwr")
        cmd = [flwr, "run", str(app_dir), "datafed", "--run-config", str(run_config_file)]
        cmd.append("--stream")
        started = _superlink_for(link, fed.tls.ca, root) if start_superlink else None
        lines: list[str] = []
        try:
            if started is not None:
                try:
                    started.start()
                except (OSError, RuntimeError) as exc:
                    raise TrainingFailed(str(exc)) from exc
                progress(f"SuperLink started on {started.address}")
            _run_flwr(cmd, env, link.connect_timeout_s, progress, on_progress, lines)
        finally:
            if started is not None:
                started.stop()
            if log_path is not None:  # the SuperLink's own log first, then the run's
                sl_log = root / "superlink.log"
                text = sl_log.read_text(errors="replace") if sl_log.exists() else ""
                log_path.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    return check_result(find_result(lines), "\n".join(lines[-40:]))


def load_client_app(reference: str = DEFAULT_CLIENTAPP) -> ClientApp:
    """Import a ClientApp named ``"package.module:attribute"`` (as a Flower App names it).

    Raises
    ------
    ConfigError
        If it cannot be imported or is not a ``flwr.clientapp.ClientApp``.
    """
    from flwr.clientapp import ClientApp

    module, sep, attr = reference.partition(":")
    try:
        if not sep:
            raise ValueError("expected 'package.module:attribute'")
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load ClientApp {reference!r}: {exc}") from exc
    if not isinstance(found, ClientApp):
        raise ConfigError(f"{reference!r} is a {type(found).__name__}, not a Flower ClientApp")
    return found


def _with_run_config(inner: ClientApp, cfg: Mapping[str, ConfigValue]) -> ClientApp:
    """``inner``, seeing ``cfg`` in every context's run config.

    Flower's ``run_simulation`` gives ClientApps an empty run config and forbids changing
    it, so each message sees a view of the context with ours; the view shares ``state``,
    so SecAgg+ and the node's grant persist between messages as in a SuperNode.
    """
    from flwr.app import Context
    from flwr.clientapp import ClientApp

    values = dict(cfg)

    class WithRunConfig(ClientApp):
        def __call__(self, message: Any, context: Context) -> Any:
            view = Context(
                context.run_id,
                context.node_id,
                context.node_config,
                context.state,
                {**context.run_config, **values},
                context.series_id,
            )
            return inner(message, view)

    return WithRunConfig()


def simulate_settings(
    settings: RunSettings,
    num_supernodes: int,
    client_app: ClientApp,
    *,
    backend_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Run datafed's ServerApp and ``client_app`` in Flower's simulation engine.

    Parameters
    ----------
    settings : RunSettings
        The run config (``sim-data`` or ``sim-nodes`` says where partitions get data).
    num_supernodes : int
        Number of simulated SuperNodes (agencies).
    client_app : flwr.clientapp.ClientApp
        The ClientApp every simulated agency runs, e.g. ``nodes.fl.client_app.app`` (or
        its mod-free ``plain_app`` for a baseline); see :func:`load_client_app`.
    backend_config : dict, optional
        Flower simulation backend config (default: one CPU per ClientApp).
    """
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from datafed.fl.server_app import main as server_main

    with tempfile.TemporaryDirectory(prefix="datafed-sim-") as tmp:
        out = Path(tmp) / "result.txt"
        cfg = replace(settings, result_path=str(out)).to_run_config()
        server = ServerApp()

        @server.main()
        def _main(grid: Grid, context: Context) -> None:
            context.run_config.update(cfg)
            server_main(grid, context)

        run_simulation(
            server,
            _with_run_config(client_app, cfg),
            num_supernodes=num_supernodes,
            backend_config=backend_config or {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
        text = out.read_text(encoding="utf-8") if out.exists() else ""
    return check_result(find_result(text.splitlines()), text[-2000:])


def simulate(
    agencies: int = 20,
    *,
    rounds: int = 3,
    seed: int = 7,
    secagg: bool = True,
    model: str = "mlp:16",
    strategy: str = "fedavg",
    overrides: dict[str, Any] | None = None,
    client_app: ClientApp | str = DEFAULT_CLIENTAPP,
) -> TrainResult:
    """Simulate ``agencies`` synthetic flood-risk agencies with Flower's simulation engine.

    Every agency is a simulated SuperNode running ``client_app`` -- by default the
    ClientApp a deployment names (:data:`~datafed.fl.settings.DEFAULT_CLIENTAPP`, loaded
    by reference as Flower loads app components) -- over its own seeded, non-IID readings
    (:mod:`datafed.fl.synthetic`); no node processes are started, no ledgers written.
    """
    settings = RunSettings(
        num_server_rounds=rounds,
        model=model,
        secagg=secagg,
        strategy=strategy,
        min_nodes=agencies,
        sim_data=f"flood:{seed}",
        seed=seed,
    )
    if overrides:
        settings = RunSettings.from_run_config({**settings.to_run_config(), **overrides})
    app = load_client_app(client_app) if isinstance(client_app, str) else client_app
    return simulate_settings(settings, agencies, app)
