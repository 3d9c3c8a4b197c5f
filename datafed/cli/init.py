"""``datafed init``: write a first ``fed.toml`` from the nodes' addresses.

Each address is asked who it is in a TLS handshake (the certificate the node presents,
verified against the federation CA): the file names each node as its certificate does.
The analyst's own files are taken from the folder ``datafed pki request`` wrote
(``--pki``), or named one by one.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

__all__ = ["init", "register"]

out = Console(soft_wrap=True, markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def init(
    addresses: list[str] = typer.Argument(..., help="each node's HOST:PORT"),
    analyst: str = typer.Option(None, "--analyst", help="your name (files under --pki)"),
    pki_dir: Path = typer.Option(Path("pki"), "--pki", help="folder with ca.crt and analyst/"),
    ca: Path = typer.Option(None, "--ca", help="the federation CA (default: PKI/ca.crt)"),
    cert: Path = typer.Option(None, "--cert", help="your certificate (default: under --pki)"),
    key: Path = typer.Option(None, "--key", help="your TLS key"),
    signing_key: Path = typer.Option(None, "--signing-key", help="your Ed25519 signing key"),
    out_path: Path = typer.Option(Path("fed.toml"), "--out", "-o", help="the file to write"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Write fed.toml: your files, and each node named as its TLS certificate names it."""
    from datafed.client.starter import write_federation
    from datafed.errors import ConfigError
    from datafed.pki import party_paths
    from datafed.pki.tls import PartyFiles

    if analyst is None and (cert is None or key is None or signing_key is None):
        raise ConfigError("pass --analyst NAME (files under --pki), or --cert, --key and "
                          "--signing-key")  # fmt: skip
    mine = party_paths(pki_dir, "analyst", analyst or "")
    files = PartyFiles(
        ca=ca or pki_dir / "ca.crt",
        cert=cert or mine.cert,
        key=key or mine.key,
        signing_key=signing_key or mine.signing_key,
    )
    nodes = write_federation(
        out_path, files, addresses, force=force, progress=lambda line: err.print("  " + line)
    )
    out.print(f"wrote {out_path}: {len(nodes)} node(s): {', '.join(n for n, _ in nodes)}")
    out.print(f"next: datafed nodes -f {out_path}")


def register(app: typer.Typer) -> None:
    """Add ``init`` to the ``datafed`` app.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.command("init")(init)
