"""``datafed-node``: the agency operator's command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from datafed.errors import ConfigError, DatafedError
from nodes.config import load_node_config
from nodes.fl.cli import register as register_fl

__all__ = ["app", "main"]

app = typer.Typer(
    help="Run an agency node: serve datasets under policy, record every data use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console(soft_wrap=True)
register_fl(app)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Serve the node's datasets over gRPC with mTLS until interrupted."""
    from nodes.server import serve as _serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    cfg = load_node_config(config)

    def ready(address: str) -> None:
        print(f"READY node={cfg.node.name} address={address}", flush=True)

    asyncio.run(_serve(cfg, on_ready=ready, config_path=config))


@app.command()
def reload(config: Path = typer.Option(..., "--config", "-c", help="node.toml")) -> None:
    """Make a serving node adopt this file's policies now (SIGHUP; recorded in its ledger).

    The file is validated first; only dataset policies and sign-off grants may change.
    """
    from nodes.server import pid_file

    cfg = load_node_config(config)
    path = pid_file(cfg)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"node {cfg.node.name} is not serving from {path.parent}") from exc
    out.print(
        f"asked node {cfg.node.name} (pid {pid}) to reload its policy; the outcome is in its "
        "log and ledger (operation policy_reload)",
        markup=False,
    )


@app.command("check-config")
def check_config(config: Path = typer.Option(..., "--config", "-c", help="node.toml")) -> None:
    """Validate a node configuration and open its datasets (no server is started)."""
    from nodes.store import DataStore

    cfg = load_node_config(config)
    store = DataStore(cfg.datasets)
    table = Table(title=f"node {cfg.node.name} ({cfg.node.agency})")
    for col in ("dataset", "columns", "requesters", "purposes", "protections", "k"):
        table.add_column(col)
    for ds in cfg.datasets:
        p = ds.policy
        table.add_row(
            ds.name,
            ", ".join(store.columns(ds.name)),
            ", ".join(p.allowed_requesters) or "(nobody)",
            ", ".join(p.allowed_purposes) or "(none)",
            ", ".join(p.allowed_protections),
            str(p.min_group_size),
        )
    store.close()
    out.print(table)


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    try:
        app()
    except DatafedError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
