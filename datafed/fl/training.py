"""The analyst's entry points: ``train`` on a real federation, ``simulate`` on one machine.

``train`` signs one training request per node, writes a Flower App (whose ServerApp and
ClientApp are the installed :mod:`datafed.fl.server_app` and :mod:`nodes.fl.client_app`,
unless ``app`` names another Flower App directory), and submits it with ``flwr run`` to
the SuperLink named in ``fed.toml`` over TLS. It streams the run's log, picks out the
ServerApp's result line and returns a :class:`~datafed.fl.result.TrainResult`.

``simulate`` runs the same ServerApp and ClientApp under Flower's simulation engine for
many synthetic agencies (or over real nodes, for benchmarks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from datafed.client.config import FederationConfig
from datafed.fl.config import FlowerLink, load_fl_federation
from datafed.fl.errors import TrainingFailed, TrainingRefused
from datafed.fl.requests import new_job_id, sign_training_bundle
from datafed.fl.result import TrainResult, find_result
from datafed.fl.settings import RunSettings, fab_pyproject
from datafed.fl.spec import DpParams, TrainingSpec
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE

__all__ = ["check_result", "simulate", "simulate_settings", "train"]


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
    cmd: list[str], env: dict[str, str], timeout_s: float, progress: Callable[[str], None]
) -> list[str]:
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if "DATAFED-FL-RESULT" not in line:
                    progress(line.rstrip("\n"))
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise TrainingFailed(f"the Flower run did not finish within {timeout_s:g}s") from exc
    return lines


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
    overrides: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> TrainResult:
    """Train one model across the federation's nodes with Flower; return the result.

    Parameters
    ----------
    federation : str | Path | tuple[FederationConfig, FlowerLink]
        ``fed.toml`` (with a ``[flower]`` table) or its loaded contents.
    purpose : str
        Declared purpose; every node's policy must allow it.
    rounds : int
        Federated rounds.
    app : str | Path, optional
        A Flower App directory to run instead of datafed's own (its config must declare
        the keys of :class:`~datafed.fl.settings.RunSettings`).
    dataset, features, label : str
        The dataset and columns to train on (identical at every node).
    model : str
        ``"mlp:16"`` etc. (see :func:`datafed.fl.model.parse_model`).
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
    overrides : dict, optional
        Further run-config values (e.g. ``{"local-epochs": 1, "stage-timeout": 60.0}``).
    progress : callable, optional
        Called with each line of the run's log.

    Raises
    ------
    TrainingRefused
        If a node refused (names the node, status and reason).
    TrainingFailed
        If the run failed or did not finish in ``[flower] connect_timeout_s``.
    """
    fed, link = (
        load_fl_federation(Path(federation)) if isinstance(federation, (str, Path)) else federation
    )
    spec = TrainingSpec(dataset, tuple(features), label, rounds, dp or DpParams(), model, secagg)
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
    cfg = {**settings.to_run_config(), **(overrides or {})}
    with tempfile.TemporaryDirectory(prefix="datafed-fl-") as tmp:
        root = Path(tmp)
        app_dir = Path(app) if app is not None else root / "app"
        if app is None:
            app_dir.mkdir()
            (app_dir / "pyproject.toml").write_text(fab_pyproject(), encoding="utf-8")
        run_config = root / "run-config.toml"
        run_config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in cfg.items()))
        bindir = str(Path(sys.executable).parent)  # Flower finds its own scripts by name
        env = {
            **os.environ,
            "FLWR_HOME": str(_flwr_home(root, link, fed.tls.ca)),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",  # stream Flower's progress lines as they happen
        }
        flwr = str(Path(sys.executable).parent / "flwr")
        cmd = [flwr, "run", str(app_dir), "datafed", "--run-config", str(run_config), "--stream"]
        lines = _run_flwr(cmd, env, link.connect_timeout_s, progress)
    return check_result(find_result(lines), "\n".join(lines[-40:]))


def simulate_settings(
    settings: RunSettings,
    num_supernodes: int,
    *,
    plain: bool = False,
    backend_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Run datafed's ServerApp and ClientApp in Flower's simulation engine with ``settings``.

    Parameters
    ----------
    settings : RunSettings
        The run config (``sim-data`` or ``sim-nodes`` says where partitions get data).
    num_supernodes : int
        Number of simulated SuperNodes (agencies).
    plain : bool
        Use the ClientApp without datafed's mods (the benchmark baseline).
    backend_config : dict, optional
        Flower simulation backend config (default: one CPU per ClientApp).
    """
    from flwr.app import Context
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from datafed.fl.server_app import main as server_main
    from nodes.fl import client_app as client_module

    with tempfile.TemporaryDirectory(prefix="datafed-sim-") as tmp:
        out = Path(tmp) / "result.txt"
        cfg = replace(settings, result_path=str(out)).to_run_config()
        server = ServerApp()

        @server.main()
        def _main(grid: Grid, context: Context) -> None:
            context.run_config.update(cfg)
            server_main(grid, context)

        def inject(msg: Any, ctxt: Context, call_next: Any) -> Any:
            # Flower forbids changing a ClientApp's run_config, so hand the rest of the
            # chain a view with ours; it shares ``state``, so SecAgg+ and grants persist.
            view = Context(
                ctxt.run_id,
                ctxt.node_id,
                ctxt.node_config,
                ctxt.state,
                {**ctxt.run_config, **cfg},
                ctxt.series_id,
            )
            return call_next(msg, view)

        mods = client_module.PLAIN_MODS if plain else client_module.MODS
        client = ClientApp(client_fn=client_module.client_fn, mods=[inject, *mods])
        run_simulation(
            server,
            client,
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
) -> TrainResult:
    """Simulate ``agencies`` synthetic flood-risk agencies with Flower's simulation engine.

    Every agency is a simulated SuperNode running the same ClientApp as in deployment,
    over its own seeded, non-IID readings (:mod:`datafed.fl.synthetic`); no node
    processes are started and no ledgers are written.
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
    return simulate_settings(settings, agencies)
