"""A first ``fed.toml``: the analyst's files and the nodes' names read from their certificates.

``datafed init ADDRESS...`` (:mod:`datafed.cli.init`) calls :func:`write_federation`: each
address is asked who it is in a TLS handshake (:func:`datafed.client.probe.peer_identity`,
verified against the federation CA), so the names in the file are the names the nodes'
certificates hold and the first query does not fail on a typo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from datafed.client.config import load_federation
from datafed.client.probe import peer_identity
from datafed.errors import ConfigError, PkiError
from datafed.pki.tls import PartyFiles, TlsMaterial

__all__ = ["federation_text", "write_federation"]


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` where it can be (the file moves with its folder)."""
    absolute = path.resolve()
    try:
        return os.path.relpath(absolute, base.resolve())
    except ValueError:  # another drive (Windows)
        return str(absolute)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def federation_text(
    analyst: str, files: PartyFiles, nodes: Sequence[tuple[str, str]], base: Path
) -> str:
    """The TOML of a federation file for ``analyst`` and ``(name, address)`` nodes."""
    lines = [
        "# written by datafed init: the nodes' names come from their TLS certificates",
        f"analyst = {_q(analyst)}",
        "timeout_s = 30",
        "",
        "[tls]",
        f"ca = {_q(_rel(files.ca, base))}",
        f"cert = {_q(_rel(files.cert, base))}",
        f"key = {_q(_rel(files.key, base))}",
        f"signing_key = {_q(_rel(files.signing_key, base))}",
    ]
    for name, address in nodes:
        lines += ["", "[[nodes]]", f"name = {_q(name)}", f"address = {_q(address)}"]
    lines += [
        "",
        "# [flower]                      # for datafed train (docs/training.md)",
        '# superlink = "superlink.example:9093"',
    ]
    return "\n".join(lines) + "\n"


def write_federation(
    out: Path,
    files: PartyFiles,
    addresses: Sequence[str],
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[tuple[str, str]]:
    """Write ``out`` naming each node at ``addresses`` as its certificate does.

    Returns the ``(name, address)`` pairs written. The file is loaded back (the same
    validation every command applies) before it is left in place.

    Raises
    ------
    ConfigError
        If ``out`` exists (without ``force``), a file is missing, no address is given, or
        two addresses answer as the same node.
    PkiError
        If the analyst's certificate is not an analyst's, or a node's is not from the CA.
    NodeUnavailable
        If an address does not answer.
    """
    if not addresses:
        raise ConfigError("name at least one node address (HOST:PORT)")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: pass --force to replace it")
    tls = TlsMaterial.load(files)
    if not files.signing_key.is_file():
        raise ConfigError(f"tls.signing_key: file not found: {files.signing_key}")
    me = tls.identity
    if me.role != "analyst":
        raise PkiError(f"{files.cert} is the certificate of {me}, not of an analyst")
    nodes: list[tuple[str, str]] = []
    for address in addresses:
        who = peer_identity(address, tls)
        progress(f"{address}: node {who.name!r}")
        nodes.append((who.name, address))
    names = [n for n, _ in nodes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two addresses answer as node {twice[0]!r}")
    text = federation_text(me.name, files, nodes, out.parent)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_federation(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return nodes
