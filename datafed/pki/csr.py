"""Certificate signing requests (PKCS#10, RFC 2986) that prove possession of both keys.

An agency asks the federation operator for a certificate without sending a private key.
The request carries

- the subject and SAN the certificate will have (role, name, hosts), signed with the
  party's TLS key -- PKCS#10's own proof that the requester holds that key;
- the Ed25519 signing key's public half in the same private extension
  (:data:`datafed.pki.identity.SIGNING_KEY_OID`) the certificate will carry, and
- a second private extension (:data:`POSSESSION_OID`) holding an Ed25519 signature over
  ``POSSESSION_CONTEXT || SPKI(TLS key) || role || 0x00 || name``: proof that whoever
  made the request also holds the signing key, bound to this very TLS key and party.

Without the second proof an agency could have the CA bind *someone else's* public
signing key to its own name. The operator's :func:`read_request` checks both proofs and
the role and name before :func:`datafed.pki.ca.sign` issues anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from datafed.errors import PkiError
from datafed.pki.identity import SIGNING_KEY_OID, check_name, subject_names

__all__ = [
    "POSSESSION_CONTEXT",
    "POSSESSION_OID",
    "CertRequest",
    "RequestView",
    "build_request",
    "inspect_request",
    "read_request",
]

#: Proof of possession of the Ed25519 key (a UUID-derived OID, ITU-T X.667 arc 2.25).
POSSESSION_OID = x509.ObjectIdentifier("2.25.240897230448969280858003641837308065893")
#: Domain separation: this signature can never pass as a request or checkpoint signature.
POSSESSION_CONTEXT = b"datafed/v1/pki-possession\x00"
_MAX_CSR_BYTES = 16 * 1024


@dataclass(frozen=True)
class CertRequest:
    """A checked signing request: who asks, for which keys and host names."""

    role: str
    name: str
    hosts: tuple[str, ...]
    tls_key: ec.EllipticCurvePublicKey
    signing_key: ed25519.Ed25519PublicKey


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _possession_message(tls_key: ec.EllipticCurvePublicKey, role: str, name: str) -> bytes:
    return POSSESSION_CONTEXT + _spki(tls_key) + role.encode() + b"\x00" + name.encode()


def build_request(
    role: str,
    name: str,
    hosts: tuple[str, ...],
    tls_key: ec.EllipticCurvePrivateKey,
    signing_key: ed25519.Ed25519PrivateKey,
) -> bytes:
    """Return a PEM signing request for ``role``/``name`` proving possession of both keys."""
    subject, sans = subject_names(role, name, hosts)
    raw_pub = signing_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    proof = signing_key.sign(_possession_message(tls_key.public_key(), role, name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, raw_pub), critical=False)
        .add_extension(x509.UnrecognizedExtension(POSSESSION_OID, proof), critical=False)
        .sign(tls_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _one(csr: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> str:
    values = csr.subject.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise PkiError("signing request subject must name exactly one CN and one OU")
    return values[0].value


def _extension(csr: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> bytes:
    try:
        ext = csr.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound as exc:
        raise PkiError("signing request lacks the datafed signing key or its proof") from exc
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise PkiError("signing request extension has an unexpected type")
    return ext.value


def _hosts(csr: x509.CertificateSigningRequest, role: str, name: str) -> tuple[str, ...]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    if san.get_values_for_type(x509.UniformResourceIdentifier) != [f"datafed:{role}:{name}"]:
        raise PkiError("signing request SAN URI does not match its role and name")
    names = [h for h in san.get_values_for_type(x509.DNSName) if h != name]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dict.fromkeys([*names, *ips]))


def read_request(pem: bytes) -> CertRequest:
    """Parse and check a signing request; return what the certificate will bind.

    Raises
    ------
    PkiError
        If the request is malformed or oversized, its PKCS#10 signature or its Ed25519
        proof of possession does not verify, or it names an unknown role or a bad name.
    """
    if len(pem) > _MAX_CSR_BYTES:
        raise PkiError("signing request is too large")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise PkiError("not a PEM certificate signing request") from exc
    if not csr.is_signature_valid:
        raise PkiError("signing request signature does not verify (TLS key not held)")
    tls_key = csr.public_key()
    if not isinstance(tls_key, ec.EllipticCurvePublicKey) or tls_key.curve.name != "secp256r1":
        raise PkiError("signing request key must be ECDSA P-256")
    role = _one(csr, NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = _one(csr, NameOID.COMMON_NAME)
    check_name(role, name)
    try:
        signing_key = ed25519.Ed25519PublicKey.from_public_bytes(_extension(csr, SIGNING_KEY_OID))
    except ValueError as exc:
        raise PkiError("signing request carries a malformed Ed25519 key") from exc
    try:
        signing_key.verify(
            _extension(csr, POSSESSION_OID), _possession_message(tls_key, role, name)
        )
    except InvalidSignature as exc:
        raise PkiError(
            "signing request does not prove possession of its Ed25519 signing key"
        ) from exc
    return CertRequest(role, name, _hosts(csr, role, name), tls_key, signing_key)


@dataclass(frozen=True)
class RequestView:
    """What a signing request says and whether each check passes (``datafed pki show``).

    ``checks`` are ``(what, ok, detail)`` in the order :func:`read_request` applies them;
    ``verdict`` is ``""`` when the CA would sign it, else the reason it would refuse.
    """

    subject: str
    role: str
    name: str
    hosts: tuple[str, ...]
    tls_key: str
    signing_key: str
    checks: tuple[tuple[str, bool, str], ...] = field(default=())
    verdict: str = ""


def _fingerprint(raw: bytes) -> str:
    return "SHA-256 " + hashlib.sha256(raw).hexdigest()


def _attr(csr: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> str:
    return ", ".join(str(a.value) for a in csr.subject.get_attributes_for_oid(oid)) or "-"


def _key_text(csr: x509.CertificateSigningRequest) -> str:
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}, {_fingerprint(_spki(key))}"
    return f"{type(key).__name__} (not ECDSA P-256)"


def _signing_key_text(csr: x509.CertificateSigningRequest) -> str:
    try:
        raw = _extension(csr, SIGNING_KEY_OID)
    except PkiError:
        return "- (missing)"
    return f"Ed25519, {_fingerprint(raw)}" if len(raw) == 32 else f"malformed ({len(raw)} bytes)"


def inspect_request(pem: bytes) -> RequestView:
    """Show what a signing request binds and check it the way the CA will, without signing.

    Raises
    ------
    PkiError
        If ``pem`` is not a PEM signing request at all (or is oversized).
    """
    if len(pem) > _MAX_CSR_BYTES:
        raise PkiError("signing request is too large")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise PkiError("not a PEM certificate signing request") from exc
    role = _attr(csr, NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = _attr(csr, NameOID.COMMON_NAME)
    checks: list[tuple[str, bool, str]] = [
        ("PKCS#10 signature (the TLS key is held)", csr.is_signature_valid, "")
    ]
    verdict = ""
    hosts: tuple[str, ...] = ()
    try:
        req = read_request(pem)
        hosts = req.hosts
    except PkiError as exc:
        verdict = str(exc)
    if csr.is_signature_valid:
        proof_ok = not verdict or "possession" not in verdict
        checks.append(("Ed25519 proof of possession (the signing key is held)", proof_ok, ""))
    checks.append(("role, name and keys as the CA requires", not verdict, verdict))
    return RequestView(
        subject=csr.subject.rfc4514_string(),
        role=role,
        name=name,
        hosts=hosts,
        tls_key=_key_text(csr),
        signing_key=_signing_key_text(csr),
        checks=tuple(checks),
        verdict=verdict,
    )
