"""A small federation CA: certificates that carry a party's role, name and signing key.

Every party (agency node, analyst, auditor, witness, the Flower SuperLink) holds

- a TLS key pair (ECDSA P-256) and a certificate signed by the federation CA, used for
  mTLS on every gRPC connection (and TLS on Flower's SuperLink), and
- an Ed25519 signing key whose public half is bound into the same certificate in a private
  extension, used to sign requests (analyst), checkpoints and cosignatures (node, witness).

What a certificate says (subject, SAN, the signing-key extension) is
:mod:`datafed.pki.identity`; where a party's and the CA's files live is
:mod:`datafed.pki.files`. Both are re-exported here.

Private keys never need to leave the party: :func:`request` makes both keys and a
certificate signing request (:mod:`datafed.pki.csr`) at the agency, the federation
operator checks and signs it with :func:`sign`. :func:`issue` does both in one directory
(tests, demos, a single-operator federation). Every certificate signed is archived under
``issued/`` in the CA directory, which :mod:`datafed.pki.registry` lists and revokes. See
docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datafed.errors import PkiError
from datafed.pki.csr import build_request, read_request
from datafed.pki.files import (
    IssuedFiles,
    load_ca,
    load_signing_key,
    party_paths,
    pem_private_key,
    write_private,
)
from datafed.pki.identity import (
    DEFAULT_FEDERATION,
    ROLES,
    SERVER_ROLES,
    SIGNING_KEY_OID,
    Identity,
    ca_federation,
    check_federation,
    check_name,
    federation_uri,
    identity_from_pem,
    qualify,
    subject_names,
)
from datafed.pki.registry import archive, holders

__all__ = [
    "DEFAULT_FEDERATION",
    "ROLES",
    "SERVER_ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "IssuedFiles",
    "ca_federation",
    "check_federation",
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

_CA_DAYS = 3650
_LEAF_DAYS = 397


def init_ca(
    pki_dir: Path,
    name: str = "datafed federation CA",
    *,
    force: bool = False,
    federation: str = DEFAULT_FEDERATION,
) -> Path:
    """Create the federation CA (``ca.crt``, ``ca.key``) in ``pki_dir``; return the cert path.

    ``federation`` names the trust domain (docs/federation.md): the CA certificate carries
    ``datafed://<federation>`` and every certificate it signs is stamped with it, so its
    parties' names are qualified (``shanghai:alice``). The default keeps bare names.
    """
    check_federation(federation)
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
    builder = x509.CertificateBuilder()
    if federation != DEFAULT_FEDERATION:
        uri = x509.UniformResourceIdentifier(federation_uri(federation))
        builder = builder.add_extension(x509.SubjectAlternativeName([uri]), critical=False)
    cert = (
        builder.subject_name(subject)
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
    write_private(key_path, pem_private_key(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


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
    both keys (see :mod:`datafed.pki.csr`).

    Raises
    ------
    PkiError
        If the role or name is invalid, or keys for this party exist (without ``force``).
    """
    check_name(role, name)
    files = party_paths(agency_dir, role, name)
    if not force and (files.key.exists() or files.signing_key.exists()):
        raise PkiError(f"keys for {role}:{name} already exist in {agency_dir}; pass force")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    sign_key = ed25519.Ed25519PrivateKey.generate()
    csr = build_request(role, name, hosts, tls_key, sign_key)
    write_private(files.key, pem_private_key(tls_key))
    write_private(files.signing_key, pem_private_key(sign_key))
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
    req = read_request(csr_pem)
    ca_cert, ca_key = load_ca(pki_dir)
    current = holders(pki_dir, req.name)
    if current and not force:
        held = ", ".join(f"{c.role}:{c.name} (serial {c.serial:x})" for c in current)
        raise PkiError(
            f"{req.name!r} already holds a valid certificate: {held}; "
            "pass --force to issue another (the old one stays valid until revoked)"
        )
    federation = ca_federation(ca_cert)
    subject, sans = subject_names(req.role, req.name, req.hosts, federation)
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
    return Identity(req.role, qualify(federation, req.name), req.signing_key, federation), target


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
    check_name(role, name)
    load_ca(pki_dir)
    if holders(pki_dir, name) and not force:
        raise PkiError(f"{name!r} already holds a valid certificate; pass --force to re-issue")
    files = request(pki_dir, role, name, hosts=hosts, force=True)
    sign(pki_dir, files.csr.read_bytes(), force=True)
    return files
