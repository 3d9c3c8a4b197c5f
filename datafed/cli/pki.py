"""``datafed pki``: the federation operator's CA and the agencies' certificate requests.

Registered on the main ``datafed`` app by :func:`register`. At an agency, ``request``
makes the private keys and a signing request (the keys never leave); at the operator,
``show`` inspects a signing request before it is signed, ``sign`` issues the
certificate, ``revoke`` publishes the revocation list nodes check, ``list`` shows every
certificate issued. ``init`` creates the CA; ``issue`` makes keys and certificate in one
step (tests, demos, single-operator federations). See docs/pki.md.

Every message is printed literally (no rich markup), so names and paths show as typed.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from datafed.errors import PkiError

__all__ = ["pki_app", "register"]

pki_app = typer.Typer(
    help="Federation PKI: the CA, certificate requests, signing, revocation.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True, markup=False, highlight=False)

DIR_OPTION = typer.Option(Path("pki"), "--dir", help="the CA directory (ca.crt, ca.key)")
ROLE_HELP = "analyst, auditor, node, superlink or witness"


@pki_app.command("init")
def pki_init(
    directory: Path = DIR_OPTION,
    name: str = typer.Option("datafed federation CA", help="CA common name"),
    force: bool = typer.Option(False, help="replace an existing CA"),
) -> None:
    """Create the federation CA (ca.crt, ca.key)."""
    from datafed.pki.ca import init_ca

    crt = init_ca(directory, name, force=force)
    out.print(f"created CA {name!r}: {crt}")


@pki_app.command("issue")
def pki_issue(
    name: str = typer.Argument(..., help="party name, e.g. water-north or alice"),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    directory: Path = DIR_OPTION,
    host: list[str] = typer.Option([], "--host", help="extra DNS name or IP for the certificate"),
    force: bool = typer.Option(False, "--force", help="issue although the name holds one"),
) -> None:
    """Make keys and a certificate for a party in the CA directory (one step)."""
    from datafed.pki.ca import issue

    files = issue(directory, role, name, hosts=tuple(host), force=force)
    out.print(f"issued {role}:{name}: {files.cert}, {files.key}, {files.signing_key}")


@pki_app.command("request")
def pki_request(
    name: str = typer.Argument(..., help="party name, e.g. water-north or alice"),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    directory: Path = typer.Option(Path("pki"), "--dir", help="the agency's own key folder"),
    host: list[str] = typer.Option([], "--host", help="extra DNS name or IP for the certificate"),
    force: bool = typer.Option(False, "--force", help="replace existing keys"),
) -> None:
    """At the agency: make the TLS key, the Ed25519 signing key and a signing request."""
    from datafed.pki.ca import request

    files = request(directory, role, name, hosts=tuple(host), force=force)
    out.print(f"keys for {role}:{name} (keep them here, 0600): {files.key}, {files.signing_key}")
    out.print(f"send this request to the federation operator: {files.csr}")


@pki_app.command("sign")
def pki_sign(
    csr: Path = typer.Argument(..., help="the agency's signing request (.csr)"),
    directory: Path = DIR_OPTION,
    out_path: Path = typer.Option(None, "--out", help="also write the certificate here"),
    force: bool = typer.Option(False, "--force", help="sign although the name holds one"),
) -> None:
    """At the operator: check a signing request and issue its certificate."""
    from datafed.pki.ca import sign

    try:
        data = csr.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"signing request not found: {csr}") from exc
    identity, cert = sign(directory, data, force=force)
    if out_path is not None:
        out_path.write_bytes(cert.read_bytes())
    out.print(f"signed {identity}: {cert}" + (f" (and {out_path})" if out_path else ""))
    out.print(f"send it back with the CA certificate {directory / 'ca.crt'}")


@pki_app.command("show")
def pki_show(
    csr: Path = typer.Argument(..., help="a signing request (.csr) to inspect before signing"),
) -> None:
    """Show a signing request: subject, role, name, hosts, keys and every check. Signs nothing.

    Exit 0 when the CA would sign it, 1 when a check fails (each is listed).
    """
    from datafed.pki.csr import inspect_request

    try:
        data = csr.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"signing request not found: {csr}") from exc
    view = inspect_request(data)
    out.print(f"signing request {csr}")
    out.print(f"  subject      {view.subject}")
    out.print(f"  role, name   {view.role}:{view.name}")
    out.print(f"  hosts        {', '.join(view.hosts) or '-'}")
    out.print(f"  TLS key      {view.tls_key}")
    out.print(f"  signing key  {view.signing_key}")
    for what, ok, detail in view.checks:
        out.print(f"  {'OK  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else ""))
    if view.verdict:
        out.print("the CA would refuse it: do not sign")
        raise typer.Exit(1)
    out.print(f"the CA would sign it: datafed pki sign {csr} --dir DIR")


@pki_app.command("revoke")
def pki_revoke(
    name: str = typer.Argument(..., help="the party whose certificates to revoke"),
    directory: Path = DIR_OPTION,
    serial: str = typer.Option(None, "--serial", help="revoke only this serial (hex)"),
    days: int = typer.Option(30, "--days", min=1, help="days until the list must be renewed"),
) -> None:
    """Revoke a party's certificates and publish the revocation list (crl.pem)."""
    from datafed.pki.registry import CRL_FILE, revoke

    number = None
    if serial is not None:
        try:
            number = int(serial, 16)
        except ValueError as exc:
            raise PkiError(f"--serial must be hexadecimal, got {serial!r}") from exc
    done = revoke(directory, name, serial=number, days=days)
    out.print(f"revoked {name}: serial(s) {', '.join(f'{s:x}' for s in done)}")
    out.print(f"published {directory / CRL_FILE}: copy it to every node (tls.crl in node.toml)")


@pki_app.command("crl")
def pki_crl(
    directory: Path = DIR_OPTION,
    days: int = typer.Option(30, "--days", min=1, help="days until the list must be renewed"),
) -> None:
    """Publish the revocation list again (before it expires) without revoking anything."""
    from datafed.pki.registry import publish_crl

    out.print(f"published {publish_crl(directory, days=days)}")


@pki_app.command("list")
def pki_list(directory: Path = DIR_OPTION) -> None:
    """Show every certificate the CA issued: name, role, serial, expiry, revocation."""
    from datafed.pki.registry import list_issued

    table = Table(title=f"certificates issued by {directory / 'ca.crt'}")
    for col in ("name", "role", "serial", "expires", "revoked"):
        table.add_column(col)
    for c in list_issued(directory):
        revoked = f"{c.revoked_at:%Y-%m-%d %H:%M}Z" if c.revoked_at else "no"
        table.add_row(c.name, c.role, f"{c.serial:x}", f"{c.not_after:%Y-%m-%d}", revoked)
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``pki`` command group to the ``datafed`` app.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.add_typer(pki_app, name="pki")
