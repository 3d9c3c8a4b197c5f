"""``datafed-node partners``: recognise partner federations, list them, withdraw them.

Registered on the ``datafed-node`` app by :func:`register`. ``add`` checks a partner's
trust bundle (``datafed pki bundle`` writes it) and puts it in the node's partners folder;
``remove`` withdraws it. A serving node adopts either on its next request, without a
restart, and records it in its ledger (:mod:`nodes.partners`; docs/federation.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

__all__ = ["partners_app", "register"]

partners_app = typer.Typer(
    help="Partner federations this node recognises (trust bundles).", no_args_is_help=True
)
out = Console(soft_wrap=True, markup=False, highlight=False)
CONFIG = typer.Option(..., "--config", "-c", help="the node's node.toml")


@partners_app.command("add")
def add(
    bundle: Path = typer.Argument(..., help="the partner's trust bundle (.bundle.json)"),
    config: Path = CONFIG,
    crl: Path | None = typer.Option(
        None,
        "--crl",
        help="the partner's revocation list, as fetched here (overrides the bundle's)",
    ),
) -> None:
    """Recognise a partner federation: its names may then be admitted by policies."""
    from datafed.pki.trust import PartnerBundle
    from nodes.config import load_node_config
    from nodes.partners import add_partner

    cfg = load_node_config(config)
    found = PartnerBundle.read(bundle)
    if crl is not None:
        found = dataclasses.replace(found, crl=crl.resolve())
    path = add_partner(cfg, found)
    out.print(
        f"recognised federation {found.federation!r} (CA sha256 {found.fingerprint}) "
        f"at node {cfg.node.name}: {path}"
    )


@partners_app.command("remove")
def remove(
    federation: str = typer.Argument(..., help="the partner federation's name"),
    config: Path = CONFIG,
) -> None:
    """Withdraw recognition: every request from that federation is refused at once."""
    from datafed.errors import PkiError
    from nodes.config import load_node_config
    from nodes.partners import remove_partner

    cfg = load_node_config(config)
    if not remove_partner(cfg, federation):
        raise PkiError(f"federation {federation!r} is not a partner of node {cfg.node.name}")
    out.print(f"withdrew recognition of federation {federation!r} at node {cfg.node.name}")


@partners_app.command("list")
def list_partners(config: Path = CONFIG) -> None:
    """The partner federations this node recognises."""
    from datafed.pki.trust import TrustStore
    from nodes.config import load_node_config
    from nodes.partners import partners_dir

    cfg = load_node_config(config)
    trust = TrustStore(cfg.tls.ca.read_bytes(), partners_dir(cfg))
    try:
        found = trust.partners()
        out.print(f"node {cfg.node.name} of federation {trust.federation!r}")
        for fed, b in sorted(found.items()):
            out.print(f"  {fed}  CA sha256 {b.fingerprint}  crl {b.crl or '-'}")
        if not found:
            out.print("  no partners")
    finally:
        trust.close()


def register(app: typer.Typer) -> None:
    """Add ``partners`` to the ``datafed-node`` app."""
    app.add_typer(partners_app, name="partners")
