"""``datafed-node``: the agency operator's command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from datafed.errors import DatafedError
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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"datafed-node {version('datafed')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Run an agency node: serve datasets under policy, record every data use."""


@app.command()
def init(
    name: str = typer.Option(..., "--name", help="the node's name (its certificate's CN)"),
    out_file: Path = typer.Option(Path("node.toml"), "--out", "-o", help="file to write"),
    agency: str = typer.Option("", "--agency", help="the agency's human-readable name"),
    pki: Path = typer.Option(Path("pki"), "--pki", help="folder of the node's keys"),
    dataset: str = typer.Option("my_dataset", "--dataset", help="the first dataset's name"),
    path: Path = typer.Option(
        Path("data/my_dataset.sqlite"), "--path", help="the first dataset's SQLite file"
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write an annotated node.toml: every key with its default and meaning."""
    from datafed.errors import ConfigError
    from datafed.pki import check_name
    from nodes.template import node_toml

    check_name("node", name)
    if out_file.exists() and not force:
        raise ConfigError(f"{out_file} exists; pass --force to overwrite it")
    text = node_toml(name, agency=agency, pki_dir=pki, dataset=dataset, path=path)
    out_file.write_text(text, encoding="utf-8")
    load_node_config(out_file)  # what we wrote must validate
    out.print(f"wrote {out_file}: edit the dataset and its policy, then run check-config")


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

    asyncio.run(_serve(cfg, on_ready=ready))


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
    except (DatafedError, OSError) as exc:  # escape: messages print literally ("[a-z0-9]")
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
