"""Interop with ``phe`` (python-paillier): key objects, JWK form, ciphertexts.

``phe``'s command-line tool ``pheutil`` stores keys as JSON Web Keys of type
``"DAJ"``: the public key ``{"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"],
"n": b64url(n)}`` and the private key ``{"kty": "DAJ", "key_ops": ["decrypt"],
"p": …, "q": …, "pub": <public JWK>}``, integers as unpadded base64url big-endian.
"""

from __future__ import annotations

import base64
from typing import Any

import phe

from datafed.hazmat._paillier import PaillierCiphertext, PaillierPublicKey
from datafed.hazmat._paillier_private import PaillierPrivateKey


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: Any, field: str) -> int:
    if not isinstance(text, str):
        raise ValueError(f"JWK field {field!r} must be a base64url string")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"JWK field {field!r} is not valid base64url") from exc
    return int.from_bytes(raw, "big")


def public_key_to_phe(key: PaillierPublicKey) -> phe.PaillierPublicKey:
    """Return the ``phe`` public key object for ``key``."""
    return phe.PaillierPublicKey(key.n)


def public_key_from_phe(key: phe.PaillierPublicKey, *, strict: bool = False) -> PaillierPublicKey:
    """Return our public key for a ``phe`` public key.

    ``strict``: full-length encryption randomness.
    """
    if key.g != key.n + 1:
        raise ValueError("only phe keys with g = n + 1 are supported")
    return PaillierPublicKey(int(key.n), strict=strict)


def private_key_to_phe(key: PaillierPrivateKey) -> phe.PaillierPrivateKey:
    """Return the ``phe`` private key object for ``key``."""
    return phe.PaillierPrivateKey(public_key_to_phe(key.public_key), key.p, key.q)


def private_key_from_phe(key: phe.PaillierPrivateKey) -> PaillierPrivateKey:
    """Return our private key for a ``phe`` private key."""
    return PaillierPrivateKey(public_key_from_phe(key.public_key), int(key.p), int(key.q))


def public_key_to_jwk(key: PaillierPublicKey, *, kid: str | None = None) -> dict[str, Any]:
    """Return ``key`` in ``phe``'s JWK form.

    ``kid``: a key identifier to include.
    """
    jwk: dict[str, Any] = {"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"], "n": _b64(key.n)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def public_key_from_jwk(jwk: dict[str, Any], *, strict: bool = False) -> PaillierPublicKey:
    """Parse a public key in ``phe``'s JWK form.

    ``strict``: full-length encryption randomness.
    """
    if not isinstance(jwk, dict):
        raise TypeError(f"JWK must be a dict, got {type(jwk).__name__}")
    if jwk.get("kty") != "DAJ" or jwk.get("alg") != "PAI-GN1":
        raise ValueError("JWK is not a Paillier public key (kty DAJ, alg PAI-GN1)")
    return PaillierPublicKey(_unb64(jwk.get("n"), "n"), strict=strict)


def private_key_to_jwk(key: PaillierPrivateKey, *, kid: str | None = None) -> dict[str, Any]:
    """Return ``key`` in ``phe``'s JWK form (with its public key under ``pub``).

    ``kid``: a key identifier to include.
    """
    jwk: dict[str, Any] = {
        "kty": "DAJ",
        "key_ops": ["decrypt"],
        "p": _b64(key.p),
        "q": _b64(key.q),
        "pub": public_key_to_jwk(key.public_key, kid=kid),
    }
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def private_key_from_jwk(jwk: dict[str, Any]) -> PaillierPrivateKey:
    """Parse a private key in ``phe``'s JWK form."""
    if not isinstance(jwk, dict):
        raise TypeError(f"JWK must be a dict, got {type(jwk).__name__}")
    if jwk.get("kty") != "DAJ" or "decrypt" not in jwk.get("key_ops", []):
        raise ValueError("JWK is not a Paillier private key (kty DAJ, key_ops decrypt)")
    public = public_key_from_jwk(jwk.get("pub", {}))
    return PaillierPrivateKey(public, _unb64(jwk.get("p"), "p"), _unb64(jwk.get("q"), "q"))


def ciphertext_to_phe(c: PaillierCiphertext) -> phe.EncryptedNumber:
    """Return ``c`` as a ``phe`` ``EncryptedNumber`` (exponent 0, an integer)."""
    return phe.EncryptedNumber(public_key_to_phe(c.public_key), int(c.value), exponent=0)


def ciphertext_from_phe(key: PaillierPublicKey, number: phe.EncryptedNumber) -> PaillierCiphertext:
    """Import a ``phe`` ``EncryptedNumber`` of an integer (exponent 0), validated."""
    if not isinstance(number, phe.EncryptedNumber):
        raise TypeError(f"expected phe.EncryptedNumber, got {type(number).__name__}")
    if number.public_key.n != key.n:
        raise ValueError("phe ciphertext belongs to a different Paillier key")
    if number.exponent != 0:
        raise ValueError(
            f"phe ciphertext must encode an integer (exponent 0), got {number.exponent}"
        )
    return key.ciphertext_from_int(int(number.ciphertext(be_secure=False)))
