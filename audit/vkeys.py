"""Public keys to pin, read from a node's certificate (or from a key file).

A datafed party certificate binds the party's Ed25519 signing key in a non-critical X.509
extension (OID :data:`SIGNING_KEY_OID`, defined by the federation PKI, ``datafed.pki.ca``;
repeated here because :mod:`audit` imports nothing from the rest of the repository).  An
auditor receives certificates, not private keys, so ``datafed-audit vkey`` reads the key
from there; with ``--ca`` it also checks that the federation CA issued the certificate --
``--ca`` may also be a partner federation's trust bundle (``.bundle.json``), so an
auditor pins the other city's keys from what its operator recognised (docs/federation.md),
and a certificate naming another federation than its CA's is refused. Names follow the
node's conventions: a node's log is ``datafed/ledger/<name>``, its witness key
``datafed/witness/<name>``, with ``<name>`` qualified in a named federation
(``datafed/ledger/suzhou:water-wujiang``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from audit.note import raw_public_key

__all__ = ["SIGNING_KEY_OID", "FoundKey", "public_key_of"]

#: Certificates of a named federation carry ``datafed://<federation>[/<role>/<name>]``.
_SCHEME = "datafed://"
#: The federation of certificates that name none (as ``datafed.pki.identity``).
DEFAULT_FEDERATION = "datafed"
#: The datafed signing-key extension (same value as ``datafed.pki.ca.SIGNING_KEY_OID``).
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.100524368485012938255517780669548082437")


@dataclass(frozen=True)
class FoundKey:
    """A raw Ed25519 public ``key`` and the key ``name`` implied by its source, if any."""

    key: bytes
    name: str | None


def public_key_of(
    data: bytes, label: str, *, witness: bool = False, ca: Path | None = None
) -> FoundKey:
    """Return the Ed25519 key in a certificate or PEM key file, and its default name.

    Parameters
    ----------
    data : bytes
        PEM: a datafed certificate, or an Ed25519 private or public key.
    label : str
        The file's name, for messages.
    witness : bool
        Name the witness key (``datafed/witness/<name>``) rather than the log's.
    ca : Path, optional
        Check that this CA issued the certificate and that it is valid now.

    Raises
    ------
    ValueError
        One line saying what is wrong with the file.
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        return _from_certificate(data, label, witness, ca)
    if ca is not None:
        raise ValueError(f"{label} is a key file, not a certificate: --ca does not apply")
    loaded: Any
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        try:
            loaded = serialization.load_pem_public_key(data)
        except ValueError:
            raise ValueError(f"{label} is not a PEM certificate or Ed25519 key") from None
    if not isinstance(loaded, (Ed25519PrivateKey, Ed25519PublicKey)):
        raise ValueError(f"{label} is not an Ed25519 key")
    return FoundKey(raw_public_key(loaded), None)


def _from_certificate(data: bytes, label: str, witness: bool, ca: Path | None) -> FoundKey:
    try:
        cert = x509.load_pem_x509_certificate(data)
        role = str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value)
        name = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        ext = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID).value
        if not isinstance(ext, x509.UnrecognizedExtension):
            raise ValueError("unexpected extension type")
        key = Ed25519PublicKey.from_public_bytes(ext.value)
    except (ValueError, IndexError, x509.ExtensionNotFound):
        raise ValueError(f"{label} is not a datafed party certificate") from None
    if ca is not None:
        _check_issued(cert, Path(ca), label)
    if role == "witness" and not witness:
        raise ValueError(f"{label} is a witness certificate: its key cosigns, add --witness")
    if role not in ("node", "witness"):
        raise ValueError(f"{label} is a certificate of role {role}: only nodes and witnesses sign")
    federation = _federation(cert, leaf=True)
    if federation != DEFAULT_FEDERATION:
        name = f"{federation}:{name}"  # the qualified name the node's log origin carries
    prefix = "datafed/witness/" if witness else "datafed/ledger/"
    return FoundKey(raw_public_key(key), prefix + name)


def _federation(cert: x509.Certificate, *, leaf: bool) -> str:
    """The federation a datafed certificate names (docs/federation.md); default if none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return DEFAULT_FEDERATION
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(_SCHEME):
            fed, _, rest = uri[len(_SCHEME) :].partition("/")
            if bool(rest) == leaf:
                return fed
    return DEFAULT_FEDERATION


def _read_cas(ca_path: Path) -> list[x509.Certificate]:
    """The CA certificates of a PEM file (one or more) or a partner trust bundle (JSON)."""
    data = ca_path.read_bytes()
    if data.lstrip().startswith(b"{"):
        try:
            data = str(json.loads(data)["ca"]).encode()
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{ca_path.name} is not a datafed trust bundle") from None
    return x509.load_pem_x509_certificates(data)


def _check_issued(cert: x509.Certificate, ca_path: Path, label: str) -> None:
    """``cert`` is issued by a CA of ``ca_path``, in that CA's own federation, valid now."""
    try:
        cas = _read_cas(ca_path)
    except FileNotFoundError:
        raise ValueError(f"CA certificate not found: {ca_path}") from None
    issuer = None
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature and friends have no common base with ValueError
            continue
        issuer = ca
        break
    if issuer is None:
        raise ValueError(f"{label} is not issued by the CA in {ca_path.name}")
    named, domain = _federation(cert, leaf=True), _federation(issuer, leaf=False)
    if named != domain:
        raise ValueError(
            f"{label} names federation {named!r} but its CA speaks for {domain!r}: "
            "a CA may issue names only in its own trust domain"
        )
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError(f"{label} is expired or not yet valid")
