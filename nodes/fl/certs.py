"""Checking a certificate that arrives inside a request rather than on the TLS connection.

A training request reaches the node through the node's own SuperNode, not from the
analyst's connection, so TLS has not checked the analyst's certificate. The node checks
it here against the federation CA it already trusts (issuer signature and validity
window) before it trusts the Ed25519 signing key inside.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from datafed.errors import PkiError
from datafed.pki import Identity, identity_from_pem
from nodes.errors import Unauthenticated

__all__ = ["verify_party_cert"]


def verify_party_cert(pem: bytes, ca_pem: bytes, now: dt.datetime | None = None) -> Identity:
    """Return the identity of ``pem`` if the federation CA issued it and it is valid now.

    Parameters
    ----------
    pem : bytes
        The party's certificate (PEM).
    ca_pem : bytes
        The federation CA certificate (PEM).
    now : datetime, optional
        The time to check validity at (default: now, UTC).

    Raises
    ------
    Unauthenticated
        If the certificate is malformed, not issued by the CA, or outside its validity.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise Unauthenticated("requester certificate is not from this federation's CA") from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Unauthenticated("requester certificate is expired or not yet valid")
    try:
        return identity_from_pem(pem)
    except PkiError as exc:
        raise Unauthenticated(str(exc)) from exc
