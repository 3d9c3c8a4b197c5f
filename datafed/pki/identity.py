"""What a datafed party certificate says: its federation, the party's role, name and signing key.

The certificate's subject is ``CN=<name>, OU=<role>, O=datafed``; the SAN carries the URI
``datafed:<role>:<name>``, the DNS name ``<name>`` and, for servers (node, witness,
superlink), ``localhost`` and ``127.0.0.1`` so loopback deployments verify. The Ed25519
signing key's public half is bound in the private extension :data:`SIGNING_KEY_OID`.

A federation is a trust domain (docs/federation.md): a CA made with a federation name
carries the SAN URI ``datafed://<federation>`` and stamps every certificate it signs with
``datafed://<federation>/<role>/<name>``. Such a party's :attr:`Identity.name` is
*qualified*, ``<federation>:<name>`` (``shanghai:alice`` is not ``suzhou:alice``), and that
is the name every policy, statement and ledger entry uses. Certificates without the URI
belong to :data:`DEFAULT_FEDERATION` and keep their bare names, so single-federation
deployments work as before.
Certificate requests (:mod:`datafed.pki.csr`), the CA (:mod:`datafed.pki.ca`) and its
register (:mod:`datafed.pki.registry`) all build on these names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from datafed.errors import PkiError

__all__ = [
    "DEFAULT_FEDERATION",
    "PARSED_CACHE",
    "PARTY_NAME_PATTERN",
    "ROLES",
    "SERVER_ROLES",
    "SIGNING_KEY_OID",
    "Identity",
    "ca_federation",
    "check_federation",
    "check_name",
    "federation_uri",
    "identity_from_pem",
    "load_certificate",
    "qualify",
    "split_name",
    "subject_names",
]

ROLES = ("analyst", "auditor", "gateway", "node", "superlink", "witness")
#: Roles that run servers: their certificates also name ``localhost`` and ``127.0.0.1``.
SERVER_ROLES = ("node", "superlink", "witness")
#: Ed25519 request/checkpoint signing key: a UUID-derived OID (ITU-T X.667, arc 2.25),
#: which needs no registration.
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.100524368485012938255517780669548082437")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_FED_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
#: A party's name as configs and statements write it: qualified in a named federation.
PARTY_NAME_PATTERN = r"^([a-z][a-z0-9-]{0,30}:)?[a-z0-9][a-z0-9._-]{0,62}$"
#: The federation of certificates that name none (every deployment before trust domains).
DEFAULT_FEDERATION = "datafed"
_SCHEME = "datafed://"


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for: role, name and Ed25519 signing key."""

    role: str
    #: The party's name, qualified ``<federation>:<name>`` unless the federation is
    #: :data:`DEFAULT_FEDERATION`.
    name: str
    signing_key: ed25519.Ed25519PublicKey
    #: The trust domain whose CA issued the certificate.
    federation: str = DEFAULT_FEDERATION

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"

    @property
    def local_name(self) -> str:
        """The name inside its federation (the certificate's CN)."""
        return split_name(self.name)[1]


def check_federation(federation: str) -> str:
    """Return ``federation`` if it is a valid trust-domain name; raise PkiError otherwise."""
    if not _FED_RE.match(federation):
        raise PkiError(
            f"invalid federation name {federation!r}: use 1-31 lowercase letters, digits "
            "or '-', starting with a letter"
        )
    return federation


def qualify(federation: str, name: str) -> str:
    """``name`` as the federation's parties see it: bare in the default federation."""
    return name if federation == DEFAULT_FEDERATION else f"{federation}:{name}"


def split_name(name: str) -> tuple[str, str]:
    """``(federation, local name)`` of a possibly qualified party name."""
    fed, sep, local = name.rpartition(":")
    return (fed, local) if sep else (DEFAULT_FEDERATION, name)


def federation_uri(federation: str, role: str | None = None, name: str | None = None) -> str:
    """``datafed://<federation>`` (a CA) or ``datafed://<federation>/<role>/<name>``."""
    return _SCHEME + federation + (f"/{role}/{name}" if role and name else "")


def _uris(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def ca_federation(cert: x509.Certificate) -> str:
    """The federation a CA certificate speaks for (:data:`DEFAULT_FEDERATION` if none)."""
    for uri in _uris(cert):
        if uri.startswith(_SCHEME) and "/" not in uri[len(_SCHEME) :]:
            return check_federation(uri[len(_SCHEME) :])
    return DEFAULT_FEDERATION


def _leaf_federation(cert: x509.Certificate, role: str, name: str) -> str:
    feds = set()
    for uri in _uris(cert):
        if uri.startswith(_SCHEME):
            fed, _, rest = uri[len(_SCHEME) :].partition("/")
            if rest != f"{role}/{name}":
                raise PkiError(f"certificate URI {uri!r} does not name {role}:{name}")
            feds.add(check_federation(fed))
    if len(feds) > 1:
        raise PkiError(f"certificate names several federations: {', '.join(sorted(feds))}")
    return feds.pop() if feds else DEFAULT_FEDERATION


def check_name(role: str, name: str) -> None:
    """Raise :class:`PkiError` unless ``role`` is known and ``name`` is a valid party name."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    if not _NAME_RE.match(name):
        raise PkiError(
            f"invalid party name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )


def subject_names(
    role: str, name: str, hosts: tuple[str, ...] = (), federation: str = DEFAULT_FEDERATION
) -> tuple[x509.Name, list[x509.GeneralName]]:
    """The subject and SAN entries of a party certificate (servers also get loopback)."""
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"datafed:{role}:{name}"),
        x509.DNSName(name),
    ]
    if federation != DEFAULT_FEDERATION:
        sans.insert(1, x509.UniformResourceIdentifier(federation_uri(federation, role, name)))
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

    The caller is responsible for chain validation (TLS does it for peers). A pure
    function of the bytes, remembered for the last :data:`PARSED_CACHE` certificates
    (a node reads its callers' and peers' certificates on every call; a failure is
    never remembered).
    """
    if type(pem) is bytes:
        return _identity_cached(pem)
    return _identity(pem)


#: Certificates whose parse (:func:`identity_from_pem`, :func:`load_certificate`) is kept.
PARSED_CACHE = 1024


@functools.lru_cache(maxsize=PARSED_CACHE)
def load_certificate(pem: bytes) -> x509.Certificate:
    """``x509.load_pem_x509_certificate``, remembered per PEM (certificates are immutable)."""
    return x509.load_pem_x509_certificate(pem)


@functools.lru_cache(maxsize=PARSED_CACHE)
def _identity_cached(pem: bytes) -> Identity:
    return _identity(pem)


def _identity(pem: bytes) -> Identity:
    try:
        cert = load_certificate(pem) if type(pem) is bytes else x509.load_pem_x509_certificate(pem)
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
    federation = _leaf_federation(cert, role, name)
    return Identity(role, qualify(federation, name), key, federation)
