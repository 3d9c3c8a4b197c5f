"""``datafed-node`` day-2 commands: backup, restore, certificate renewal (docs/operator.md)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from nodes.config import NodeConfig, load_node_config

__all__ = ["register"]

out = Console(soft_wrap=True)
renew_app = typer.Typer(
    help="Renew the node's certificate, keeping its ledger's signing key.", no_args_is_help=True
)
CONFIG = typer.Option(..., "--config", "-c", help="node.toml")


def _serving(cfg: NodeConfig) -> bool:
    """Whether the node's pid file names a live process."""
    from nodes.server import pid_file

    try:
        os.kill(int(pid_file(cfg).read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def backup(
    config: Path = CONFIG,
    out_file: Path = typer.Option(..., "--out", "-o", help="the archive to write (.tar.gz)"),
) -> None:
    """Back up the node's state (ledger, budgets, history), also while it serves; verified."""
    from nodes.state import backup as _backup

    summary = _backup(load_node_config(config), out_file)
    _say(f"wrote {out_file} (verified): {summary.describe()}")


def restore(
    archive: Path = typer.Argument(..., help="an archive written by `datafed-node backup`"),
    config: Path = CONFIG,
    force: bool = typer.Option(
        False, "--force", help="restore even over a longer ledger (it is kept beside)"
    ),
) -> None:
    """Verify a backup and make it the node's state (the node must be stopped)."""
    from nodes.state import restore as _restore

    cfg = load_node_config(config)
    summary = _restore(cfg, archive, pid_alive=_serving(cfg), force=force)
    _say(f"restored {archive} into {cfg.node.state_dir} (verified): {summary.describe()}")
    _say(
        "anything the node recorded after this backup is gone: its witnesses will report a "
        "shorter log, and epsilon spent since then is no longer counted (docs/operator.md)"
    )


@renew_app.command("request")
def renew_request(
    config: Path = CONFIG,
    out_file: Path | None = typer.Option(None, "--out", "-o", help="default: <name>.renew.csr"),
) -> None:
    """Write a renewal request binding the node's current signing key, and a fresh TLS key."""
    from nodes.renew import new_key_path, renewal_request

    cfg = load_node_config(config)
    path = renewal_request(cfg, out_file or Path(f"{cfg.node.name}.renew.csr"))
    _say(
        f"wrote {path} (same signing key, new TLS key in {new_key_path(cfg)}): send it to the "
        "federation operator (`datafed pki sign --force`), then `datafed-node renew install`"
    )


@renew_app.command("install")
def renew_install(
    cert: Path = typer.Argument(..., help="the renewed certificate"),
    config: Path = CONFIG,
) -> None:
    """Check the renewed certificate and put it in place (old files kept as *.old)."""
    from nodes.renew import install

    cfg = load_node_config(config)
    new = install(cfg, cert)
    _say(
        f"installed {cfg.tls.cert} (valid until {new.not_valid_after_utc:%Y-%m-%d}; same "
        "ledger signing key): restart the node to use it"
    )


def register(app: typer.Typer) -> None:
    """Add the day-2 commands to ``datafed-node``."""
    app.command()(backup)
    app.command()(restore)
    app.add_typer(renew_app, name="renew")
