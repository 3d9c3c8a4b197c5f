"""Flower's simulation engine with datafed's ServerApp and a ClientApp the caller injects.

``simulate_settings`` runs :mod:`datafed.fl.server_app` with the ClientApp it is given --
this package never imports the node side (``nodes``); callers pass
``nodes.fl.client_app.app`` (or its mod-free ``plain_app`` as a baseline), or name it by
reference (:func:`load_client_app`, as a Flower App names its components). ``simulate``
runs many seeded synthetic flood agencies (:mod:`datafed.fl.synthetic`); no node
processes are started and no ledgers are written.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datafed.errors import ConfigError
from datafed.fl.result import TrainResult, check_result, find_result
from datafed.fl.settings import DEFAULT_CLIENTAPP, ConfigValue, RunSettings

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

__all__ = ["load_client_app", "simulate", "simulate_settings"]


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
