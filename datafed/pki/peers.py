"""Peer keys from federation certificates: verified identities and X25519 agreement.

Modes in which nodes protect data *for each other* (pairwise masks, sealed shares) learn
their peers' certificates from the analyst's request.  A node never trusts those bytes
as given: :func:`verify_peer` checks that the certificate was issued by a trusted CA (home
or a recognised partner's) in its own federation, is valid now, is not on a revocation
list the node watches (:mod:`datafed.pki.crl`) and names the expected role.  X25519 keys
are derived from the Ed25519 signing key bound in every certificate (RFC 7748 birational
map, as libsodium's ``crypto_sign_ed25519_*_to_curve25519``), so no extra key
distribution is needed.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from nacl import bindings

from datafed.errors import PkiError
from datafed.pki.identity import Identity
from datafed.pki.trust import load_anchors, verify_chain

__all__ = ["shared_secret", "verify_peer", "x25519_private", "x25519_public"]


def verify_peer(pem: bytes, ca_pem: bytes, *, role: str = "node") -> Identity:
    """Return the identity of a peer certificate issued by a trusted CA; raise PkiError otherwise.

    ``ca_pem`` holds the CAs trusted (the home CA, then any recognised partner's, as
    :meth:`datafed.pki.trust.TrustStore.anchors_pem` gives them); the certificate must name
    its issuer's federation (:func:`datafed.pki.trust.verify_chain`).
    """
    identity = verify_chain(pem, load_anchors(ca_pem))
    if identity.role != role:
        raise PkiError(f"peer certificate is for role {identity.role!r}, expected {role!r}")
    return identity


def x25519_private(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The X25519 secret scalar of an Ed25519 signing key."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return bytes(bindings.crypto_sign_ed25519_sk_to_curve25519(seed + pub))


def x25519_public(identity: Identity) -> bytes:
    """The X25519 public key of a certificate's Ed25519 signing key."""
    raw = identity.signing_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(raw))


def shared_secret(own: ed25519.Ed25519PrivateKey, peer: Identity) -> bytes:
    """X25519 agreement between a node's key and a verified peer's key."""
    return bytes(bindings.crypto_scalarmult(x25519_private(own), x25519_public(peer)))
