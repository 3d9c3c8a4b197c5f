"""A small federation CA: certificates that carry a party's role, name and signing key.

Every party (agency node, analyst, auditor, witness, the Flower SuperLink) holds

- a TLS key pair (ECDSA P-256) and a certificate signed by the federation CA, used for
  mTLS on every gRPC connection (and TLS on Flower's SuperLink), and
- an Ed25519 signing key whose public half is bound into the same certificate in a private
  extension, used to sign requests (analyst), checkpoints and cosignatures (node, witness).

The certificate's subject is ``CN=<name>, OU=<role>, O=datafed``; the SAN carries the URI
``datafed:<role>:<name>``, the DNS name ``<name>`` and, for servers (node, witness,
superlink), ``localhost`` and ``127.0.0.1`` so loopback deployments verify.

Private keys never need to leave the party: :func:`request` makes both keys and a
certificate signing request (:mod:`datafed.pki.request`) at the agency, the federation
operator checks and signs it with :func:`sign`. :func:`issue` does both in one directory
(tests, demos, a single-operator federation). Every certificate signed is archived under
``issued/`` in the CA directory, which :mod:`datafed.pki.registry` lists and revokes. See
docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
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
    "SERVER_ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "IssuedFiles",
    "check_name",
    "identity_from_pem",
    "init_ca",
    "issue",
    "load_ca",
    "load_signing_key",
    "party_paths",
    "request",
    "sign",
    "subject_names",
    "write_private",
]

ROLES = ("analyst", "auditor", "gateway", "node", "superlink", "witness")
#: Roles that run servers: their certificates also name ``localhost`` and ``127.0.0.1``.
SERVER_ROLES = ("node", "superlink", "witness")
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
    """Where a party's certificate, TLS key, Ed25519 signing key and request live."""

    cert: Path
    key: Path
    signing_key: Path

    @property
    def csr(self) -> Path:
        """The certificate signing request :func:`request` writes beside the keys."""
        return self.cert.with_suffix(".csr")


def party_paths(pki_dir: Path, role: str, name: str) -> IssuedFiles:
    """Return where the files of ``role``/``name`` live under ``pki_dir``."""
    base = pki_dir / role
    return IssuedFiles(base / f"{name}.crt", base / f"{name}.key", base / f"{name}.ed25519")


def check_name(role: str, name: str) -> None:
    """Raise :class:`PkiError` unless ``role`` is known and ``name`` is a valid party name."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if not _NAME_RE.match(name):
        raise PkiError(
            f"invalid party name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file readable by its owner only (created 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


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
    write_private(key_path, _pem_key(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


def load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the CA certificate and key from ``pki_dir``; raise PkiError if there is none."""
    crt, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not crt.exists() or not key_path.exists():
        raise PkiError(f"no CA in {pki_dir}: run 'datafed pki init' first")
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return cert, key


def subject_names(
    role: str, name: str, hosts: tuple[str, ...] = ()
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The subject and SAN entries of a party certificate (servers also get loopback)."""
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"datafed:{role}:{name}"),
        x509.DNSName(name),
    ]
    all_hosts = (*hosts, "localhost", "127.0.0.1") if role in SERVER_ROLES else hosts
    for host in dict.fromkeys(all_hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "datafed"),
        ]
    )
    return subject, sans


def request(
    agency_dir: Path,
    role: str,
    name: str,
    *,
    hosts: tuple[str, ...] = (),
    force: bool = False,
) -> IssuedFiles:
    """Make a party's TLS key, Ed25519 signing key and signing request in ``agency_dir``.

    Run at the agency: the private keys are written (0600) to :func:`party_paths` of
    ``agency_dir`` and never leave it; send ``IssuedFiles.csr`` to the federation operator,
    who answers with the certificate (:func:`sign`). The request proves possession of
    both keys (see :mod:`datafed.pki.request`).

    Raises
    ------
    PkiError
        If the role or name is invalid, or keys for this party exist (without ``force``).
    """
    from datafed.pki.request import build_request

    check_name(role, name)
    files = party_paths(agency_dir, role, name)
    if not force and (files.key.exists() or files.signing_key.exists()):
        raise PkiError(f"keys for {role}:{name} already exist in {agency_dir}; pass force")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    sign_key = ed25519.Ed25519PrivateKey.generate()
    csr = build_request(role, name, hosts, tls_key, sign_key)
    write_private(files.key, _pem_key(tls_key))
    write_private(files.signing_key, _pem_key(sign_key))
    files.csr.write_bytes(csr)
    return files


def sign(
    pki_dir: Path, csr_pem: bytes, *, force: bool = False, days: int = _LEAF_DAYS
) -> tuple[Identity, Path]:
    """Check a signing request and issue its certificate with the federation CA.

    The certificate is written to :func:`party_paths` of ``pki_dir`` and archived under
    ``pki_dir/issued/`` (what ``datafed pki list`` and ``revoke`` read).

    Raises
    ------
    PkiError
        If the request is malformed, does not prove possession of its keys, or names a
        party that already holds a valid certificate (unless ``force``).
    """
    from datafed.pki.registry import archive, holders
    from datafed.pki.request import read_request

    req = read_request(csr_pem)
    ca_cert, ca_key = load_ca(pki_dir)
    current = holders(pki_dir, req.name)
    if current and not force:
        held = ", ".join(f"{c.role}:{c.name} (serial {c.serial:x})" for c in current)
        raise PkiError(
            f"{req.name!r} already holds a valid certificate: {held}; "
            "pass --force to issue another (the old one stays valid until revoked)"
        )
    subject, sans = subject_names(req.role, req.name, req.hosts)
    now = dt.datetime.now(dt.timezone.utc)
    sign_pub = req.signing_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(req.tls_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, sign_pub), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    target = party_paths(pki_dir, req.role, req.name).cert
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pem)
    archive(pki_dir, cert)
    return Identity(req.role, req.name, req.signing_key), target


def issue(
    pki_dir: Path,
    role: str,
    name: str,
    *,
    hosts: tuple[str, ...] = (),
    force: bool = False,
) -> IssuedFiles:
    """Make keys, a request and its certificate for ``role``/``name`` all in ``pki_dir``.

    The one-step path for tests, demos and federations run by a single operator; agencies
    that keep their own keys use :func:`request` and :func:`sign` instead.

    Raises
    ------
    PkiError
        If the role or name is invalid, there is no CA, or the name already holds a valid
        certificate (unless ``force``).
    """
    from datafed.pki.registry import holders

    check_name(role, name)
    load_ca(pki_dir)
    if holders(pki_dir, name) and not force:
        raise PkiError(f"{name!r} already holds a valid certificate; pass --force to re-issue")
    files = request(pki_dir, role, name, hosts=hosts, force=True)
    sign(pki_dir, files.csr.read_bytes(), force=True)
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
