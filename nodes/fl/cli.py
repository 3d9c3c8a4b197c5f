"""``datafed-node supernode``: start the agency's Flower SuperNode beside its node.

Registered on the ``datafed-node`` app by :func:`register`. The SuperNode connects to the
federation's SuperLink over TLS (verified with the federation CA from ``node.toml``) and
runs datafed's ClientApp, which reaches this node over mTLS on loopback.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "supernode"]


def supernode(
    config: Path = typer.Option(..., "--config", "-c", help="the node's node.toml"),
    superlink: str = typer.Option(..., "--superlink", help="SuperLink Fleet API host:port"),
    port: int = typer.Option(9094, "--port", help="the SuperNode's loopback Runtime API port"),
    node_address: str = typer.Option(
        "", "--node-address", help="the node's gRPC address (default: its listen address)"
    ),
    poll_interval: float = typer.Option(
        0.1, "--poll-interval", help="seconds between pulls from the SuperLink while idle"
    ),
    superlink_ca: Path | None = typer.Option(
        None,
        "--superlink-ca",
        help="CA of the SuperLink's certificate: a PEM file, or a partner city's trust "
        "bundle (a SuperLink run by a partner city); default: the home CA (tls.ca)",
    ),
) -> None:
    """Run the Flower SuperNode of this agency (replaces this process)."""
    from nodes.config import load_node_config
    from nodes.fl.supernode import run_supernode
    from nodes.fl.supernode import superlink_ca as ca_of

    cfg = load_node_config(config)
    ca = ca_of(cfg, superlink_ca)
    run_supernode(config, superlink, port, ca, node_address or None, poll_interval)


def register(app: typer.Typer) -> None:
    """Add the ``supernode`` command to ``app``.

    Parameters
    ----------
    app
        The ``datafed-node`` command-line application.
    """
    app.command("supernode")(supernode)
