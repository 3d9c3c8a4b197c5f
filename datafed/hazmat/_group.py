"""The prime-order group of edwards25519 for ECDH-PSI, through libsodium (PyNaCl).

PyNaCl 1.6 exposes no ristretto255 functions, so we work in the prime-order
subgroup of edwards25519 (order ``L = 2^252 + 27742317777372353535851937790883648493``,
RFC 8032 §5.1) with libsodium's ``crypto_core_ed25519_*`` and
``crypto_scalarmult_ed25519_noclamp``: the latter rejects non-canonical points,
points of small order and points outside the main subgroup, so every point a
peer sends is validated by the very operation that uses it.

Hashing to the group follows the random-oracle construction of RFC 9380 §3
(``hash_to_curve``): two independent field-element maps (libsodium's Elligator 2
``crypto_core_ed25519_from_uniform``, which also clears the cofactor) are added.
"""

from __future__ import annotations

import hashlib
import secrets

from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from datafed.hazmat.errors import InvalidPoint

POINT_BYTES = 32
"""Compressed edwards25519 point length (RFC 8032 §5.1.2)."""

SCALAR_BYTES = 32
"""Scalar length: little-endian integers modulo ``L``."""

_DOMAIN = b"datafed-psi-v1 hash-to-group"


def hash_to_group(item: bytes, *, domain: bytes = _DOMAIN) -> bytes:
    """Map ``item`` to a point of the prime-order subgroup (random-oracle style).

    Parameters
    ----------
    item : bytes
        The item (e.g. a UTF-8 identifier).
    domain : bytes, optional
        Domain separation tag; both PSI parties must use the same one.

    Returns
    -------
    bytes
        A 32-byte compressed point.
    """
    digest = hashlib.sha512(len(domain).to_bytes(2, "big") + domain + item).digest()
    p1 = bindings.crypto_core_ed25519_from_uniform(digest[:32])
    p2 = bindings.crypto_core_ed25519_from_uniform(digest[32:])
    return bindings.crypto_core_ed25519_add(p1, p2)


def random_scalar() -> bytes:
    """Return a uniform non-zero scalar modulo ``L`` (reduced from 512 random bits).

    Returns
    -------
    bytes
        A 32-byte little-endian scalar.
    """
    while True:
        k = bindings.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(k):
            return k


def scalar_mult(scalar: bytes, point: bytes) -> bytes:
    """Return ``[scalar]·point``, validating ``point`` first.

    Parameters
    ----------
    scalar : bytes
        A 32-byte scalar modulo ``L``.
    point : bytes
        A 32-byte compressed point from a peer.

    Returns
    -------
    bytes
        The product point.

    Raises
    ------
    InvalidPoint
        If ``point`` is not a canonical element of the prime-order subgroup or the
        result is the identity.
    """
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        raise InvalidPoint
    try:
        return bindings.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except (CryptoError, NaclRuntimeError, ValueError, TypeError) as exc:
        raise InvalidPoint from exc


def is_valid_point(point: bytes) -> bool:
    """Return whether ``point`` is a canonical prime-order-subgroup element.

    Parameters
    ----------
    point : bytes
        Candidate encoding.

    Returns
    -------
    bool
        ``True`` when valid and not of small order.
    """
    return (
        isinstance(point, bytes)
        and len(point) == POINT_BYTES
        and bool(bindings.crypto_core_ed25519_is_valid_point(point))
    )
