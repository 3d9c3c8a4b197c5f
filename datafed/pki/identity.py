"""What a datafed party certificate says: the party's role, its name and its signing key.

The certificate's subject is ``CN=<name>, OU=<role>, O=datafed``; the SAN carries the URI
``datafed:<role>:<name>``, the DNS name ``<name>`` and, for servers (node, witness,
superlink), ``localhost`` and ``127.0.0.1`` so loopback deployments verify. The Ed25519
signing key's public half is bound in the private extension :data:`SIGNING_KEY_OID`.
Certificate requests (:mod:`datafed.pki.csr`), the CA (:mod:`datafed.pki.ca`) and its
register (:mod:`datafed.pki.registry`) all build on these names.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from datafed.errors import PkiError

__all__ = [
    "ROLES",
    "SERVER_ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "check_name",
    "identity_from_pem",
    "subject_names",
]

ROLES = ("analyst", "auditor", "gateway", "node", "superlink", "witness")
#: Roles that run servers: their certificates also name ``localhost`` and ``127.0.0.1``.
SERVER_ROLES = ("node", "superlink", "witness")
#: Ed25519 request/checkpoint signing key: a UUID-derived OID (ITU-T X.667, arc 2.25),
#: which needs no registration.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.100524368485012938255517780669548082437")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for: role, name and Ed25519 signing key."""

    role: str
    name: str
    signing_key: ed25519.Ed25519PublicKey

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


def check_name(role: str, name: str) -> None:
    """Raise :class:`PkiError` unless ``role`` is known and ``name`` is a valid party name."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if not _NAME_RE.match(name):
        raise PkiError(
            f"invalid party name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )


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
