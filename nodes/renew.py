"""Renewing a node's certificate without changing its ledger's identity.

A node's ledger is the log ``datafed/ledger/<name>`` whose checkpoints are signed with the
node's Ed25519 key -- the key its certificate binds, which witnesses and auditors pin.  A
renewal must therefore keep that key: :func:`renewal_request` writes a signing request
that binds the node's *existing* signing key (with a fresh TLS key beside the current
one, ``<tls.key>.new``); the federation operator signs it (``datafed pki sign --force``:
the name already holds a certificate); :func:`install` checks the certificate -- issued by
the federation CA, for this node, valid now, binding the same signing key, made for the
new TLS key -- keeps the old files as ``*.old`` and puts the new ones in place.  Then
restart the node (``datafed-node serve``); its ledger continues, append-only, under the
same origin and key.  docs/operator.md ("Certificate renewal").
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from datafed.errors import ConfigError, PkiError
from nodes.config import NodeConfig

__all__ = ["install", "new_key_path", "renewal_request"]


def new_key_path(cfg: NodeConfig) -> Path:
    """Where the renewal's fresh TLS key waits for its certificate."""
    return Path(f"{cfg.tls.key}.new")


def _raw(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined, no-any-return]


def renewal_request(cfg: NodeConfig, out: Path) -> Path:
    """Write a request binding the node's current signing key and a fresh TLS key."""
    from datafed.pki.ca import load_signing_key
    from datafed.pki.csr import build_request
    from datafed.pki.files import pem_private_key, write_private

    signing = load_signing_key(cfg.tls.signing_key)
    current = x509.load_pem_x509_certificate(Path(cfg.tls.cert).read_bytes())
    try:
        san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [h for h in san.get_values_for_type(x509.DNSName) if h != cfg.node.name]
        hosts += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        hosts = []
    tls_key = ec.generate_private_key(ec.SECP256R1())
    csr = build_request("node", cfg.node.name, tuple(dict.fromkeys(hosts)), tls_key, signing)
    write_private(new_key_path(cfg), pem_private_key(tls_key))
    out.write_bytes(csr)
    return out


def install(cfg: NodeConfig, cert_path: Path) -> x509.Certificate:
    """Check the renewed certificate (module docs) and put it and its key in place."""
    from datafed.pki.ca import load_signing_key
    from datafed.pki.identity import identity_from_pem

    pem = cert_path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(Path(cfg.tls.ca).read_bytes())
        cert.verify_directly_issued_by(ca)
        identity = identity_from_pem(pem)
    except Exception as exc:  # InvalidSignature shares no base with ValueError
        raise PkiError(f"{cert_path} is not a certificate of the federation CA") from exc
    if (identity.role, identity.name) != ("node", cfg.node.name):
        raise PkiError(f"{cert_path} is for {identity}, not node:{cfg.node.name}")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(f"{cert_path} is not valid now ({cert.not_valid_after_utc:%Y-%m-%d})")
    signing = load_signing_key(cfg.tls.signing_key).public_key()
    if _raw(identity.signing_key) != _raw(signing):
        raise PkiError(
            f"{cert_path} binds another Ed25519 key than {cfg.tls.signing_key}: installing it "
            "would change the ledger's identity (its checkpoints are signed with that key); "
            "request the renewal with `datafed-node renew request`"
        )
    new_key = new_key_path(cfg)
    if not new_key.is_file():
        raise ConfigError(f"no {new_key}: run `datafed-node renew request` first")
    key = serialization.load_pem_private_key(new_key.read_bytes(), None)
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise PkiError(f"{cert_path} was not made for the key in {new_key}")
    cert_file, key_file = Path(cfg.tls.cert), Path(cfg.tls.key)
    for live in (cert_file, key_file):
        if live.exists():
            os.replace(live, Path(f"{live}.old"))
    cert_file.write_bytes(pem)
    os.replace(new_key, key_file)
    return cert


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
