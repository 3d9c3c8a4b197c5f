"""A small federation CA: issue X.509 certificates that carry a party's role and name.

Every party (agency node, analyst, auditor, witness) gets

- a TLS key pair (ECDSA P-256) and a certificate signed by the federation CA, used for
  mTLS on every gRPC connection, and
- an Ed25519 signing key whose public half is bound into the same certificate in a private
  extension, used to sign requests (analyst), checkpoints and cosignatures (node, witness).

The certificate's subject is ``CN=<name>, OU=<role>, O=datafed``; the SAN carries the URI
``datafed:<role>:<name>``, the DNS name ``<name>`` and, for nodes, ``localhost`` and
``127.0.0.1`` so loopback deployments verify.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datafed.errors import PkiError

__all__ = [
    "ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "IssuedFiles",
    "identity_from_pem",
    "init_ca",
    "issue",
    "load_signing_key",
    "party_paths",
]

ROLES = ("analyst", "auditor", "gateway", "node", "witness")
#: Ed25519 request/checkpoint signing key: a UUID-derived OID (ITU-T X.667, arc 2.25),
#: which needs no registration.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.100524368485012938255517780669548082437")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_CA_DAYS = 3650
_LEAF_DAYS = 397


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for: role, name and Ed25519 signing key."""

    role: str
    name: str
    signing_key: ed25519.Ed25519PublicKey

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


@dataclass(frozen=True)
class IssuedFiles:
    """Paths written by :func:`issue`."""

    cert: Path
    key: Path
    signing_key: Path


def party_paths(pki_dir: Path, role: str, name: str) -> IssuedFiles:
    """Return where :func:`issue` stores the files of ``role``/``name`` under ``pki_dir``."""
    base = pki_dir / role
    return IssuedFiles(base / f"{name}.crt", base / f"{name}.key", base / f"{name}.ed25519")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise PkiError(
            f"invalid party name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(pki_dir: Path, name: str = "datafed federation CA", *, force: bool = False) -> Path:
    """Create the federation CA (``ca.crt``, ``ca.key``) in ``pki_dir``; return the cert path."""
    crt, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if crt.exists() and not force:
        raise PkiError(f"a CA already exists at {crt}; pass force to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datafed"),
        ]
    )
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _pem_key(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not crt.exists() or not key_path.exists():
        raise PkiError(f"no CA in {pki_dir}: run 'datafed pki init' first")
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return cert, key


def issue(pki_dir: Path, role: str, name: str, *, hosts: tuple[str, ...] = ()) -> IssuedFiles:
    """Issue a certificate, TLS key and Ed25519 signing key for ``role``/``name``.

    Parameters
    ----------
    pki_dir
        Directory holding the CA made by :func:`init_ca`.
    role
        One of :data:`ROLES`.
    name
        The party's name, e.g. ``water-north`` or ``alice``.
    hosts
        Extra DNS names or IP addresses for the SAN (nodes always get ``localhost``
        and ``127.0.0.1``).
    """
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    _check_name(name)
    ca_cert, ca_key = _load_ca(pki_dir)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    sign_key = ed25519.Ed25519PrivateKey.generate()
    sign_pub = sign_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"datafed:{role}:{name}"),
        x509.DNSName(name),
    ]
    all_hosts = (*hosts, "localhost", "127.0.0.1") if role in ("node", "witness") else hosts
    for host in dict.fromkeys(all_hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datafed"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, sign_pub), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = party_paths(pki_dir, role, name)
    _write_private(files.key, _pem_key(tls_key))
    _write_private(files.signing_key, _pem_key(sign_key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def identity_from_pem(pem: bytes) -> Identity:
    """Read role, name and signing key from a datafed certificate (PEM).

    The caller is responsible for chain validation (TLS does it for peers).
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
        role = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        ext = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID).value
        if not isinstance(ext, x509.UnrecognizedExtension):
            raise PkiError("signing key extension has an unexpected type")
        key = ed25519.Ed25519PublicKey.from_public_bytes(ext.value)
    except (ValueError, IndexError, x509.ExtensionNotFound) as exc:
        raise PkiError("certificate is not a datafed party certificate") from exc
    if not isinstance(role, str) or not isinstance(name, str) or role not in ROLES:
        raise PkiError(f"certificate names an unknown role {role!r}")
    return Identity(role=role, name=name, signing_key=key)


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Load a party's Ed25519 signing key (PEM, PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"signing key not found: {path}") from exc
    except ValueError as exc:
        raise PkiError(f"signing key {path} is not a PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"signing key {path} is not an Ed25519 key")
    return key
