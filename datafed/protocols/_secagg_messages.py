"""Messages of the secure-aggregation protocol, and the crypto both sides share.

Rounds follow Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017), Figure 4, with the consistency
check of its active-adversary variant (round 3):

0. ``AdvertiseKeys``  client → server, then ``KeyRoster`` server → clients (U1)
1. ``ShareKeys``      client → server, then ``ForwardedShares`` server → client (U2)
2. ``MaskedInput``    client → server, then ``Survivors`` server → clients (U3)
3. consistency        each client in U3 signs :func:`consistency_message` of U3; the
                      server hands the signatures of U4 ⊆ U3 (at least ``t``) back
4. ``UnmaskShares``   client → server; the server outputs ``Σ_{u∈U3} x_u``.

Signing and checking signatures is the caller's (the clients' long-term keys live
outside this state machine); the client only unmasks once ``t`` signers vouch for
the same U3 it saw, and it sees U3 once.  Two different survivor sets would thus
need ``2t > n`` distinct signers, so a server cannot tell some clients that ``u``
survived (collecting ``u``'s self-mask shares) and others that it dropped
(collecting its mask-key shares).

Vectors are elements of ``Z_2^64``, carried as little-endian ``uint64`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from datafed.hazmat import RingArray, ShamirShare, derive_seed, prg_uint64
from datafed.protocols.errors import InvalidMessage

MASK_LABEL = b"datafed secagg v1 pairwise mask"
"""HKDF info for pairwise-mask seeds (RFC 5869)."""

AEAD_LABEL = b"datafed secagg v1 share encryption"
"""HKDF info for the AES-GCM keys that carry Shamir shares between clients."""

CONSISTENCY_LABEL = b"datafed secagg v1 consistency\x00"
"""Prefix of the round-3 message that every survivor signs."""


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0: a client's two X25519 public keys (encryption ``c``, masking ``s``)."""

    sender: int
    c_public: bytes
    s_public: bytes


@dataclass(frozen=True)
class KeyRoster:
    """Round 0 reply: every client's advertised keys (the set U1)."""

    keys: tuple[AdvertiseKeys, ...]


@dataclass(frozen=True)
class ShareKeys:
    """Round 1: AES-GCM ciphertexts of Shamir shares, one per other client ``(recipient, ct)``."""

    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class ForwardedShares:
    """Round 1 reply: the ciphertexts addressed to ``recipient`` as ``(sender, ct)`` (U2)."""

    recipient: int
    ciphertexts: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class MaskedInput:
    """Round 2: the masked vector ``y_u`` as little-endian ``uint64`` bytes."""

    sender: int
    masked: bytes


@dataclass(frozen=True)
class Survivors:
    """Round 2 reply: the clients whose masked input arrived (the set U3)."""

    clients: tuple[int, ...]


def consistency_message(survivors: Survivors) -> bytes:
    """Round 3: the bytes every client in U3 signs -- a label and the sorted ids of U3."""
    return CONSISTENCY_LABEL + b"".join(c.to_bytes(4, "big") for c in sorted(survivors.clients))


@dataclass(frozen=True)
class UnmaskShares:
    """Round 4: self-mask shares of survivors and mask-key shares of dropped clients."""

    sender: int
    self_mask_shares: tuple[tuple[int, ShamirShare], ...]
    key_shares: tuple[tuple[int, ShamirShare], ...]


def ring_to_bytes(vec: RingArray) -> bytes:
    """Encode a ``uint64`` vector as little-endian bytes."""
    return np.asarray(vec, dtype="<u8").tobytes()


def ring_from_bytes(data: bytes, length: int) -> RingArray:
    """Decode little-endian ``uint64`` bytes, checking the length."""
    if not isinstance(data, bytes) or len(data) != 8 * length:
        raise InvalidMessage
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 key agreement (RFC 7748 §6.1) with a peer's raw public key."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length or an all-zero (small-order) result
        raise InvalidMessage from exc
    return shared


def pairwise_mask(shared: bytes, length: int) -> RingArray:
    """Expand an X25519 shared secret into the pairwise mask ``PRG(s_uv)``."""
    return prg_uint64(derive_seed(shared, MASK_LABEL), length)


def encode_share_pair(u: int, v: int, s_share: ShamirShare, b_share: ShamirShare) -> bytes:
    """Serialize ``u ‖ v ‖ shares`` as the AEAD plaintext of round 1."""
    out = bytearray(u.to_bytes(4, "big") + v.to_bytes(4, "big"))
    for share in (s_share, b_share):
        out += len(share.ys).to_bytes(1, "big")
        for y in share.ys:
            out += y.to_bytes(16, "big")
    return bytes(out)


def decode_share_pair(data: bytes, x: int) -> tuple[int, int, ShamirShare, ShamirShare]:
    """Parse :func:`encode_share_pair`'s output; the share point is the recipient ``x``."""
    try:
        u, v, pos = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big"), 8
        shares = []
        for _ in range(2):
            count = data[pos]
            pos += 1
            ys = tuple(
                int.from_bytes(data[pos + 16 * i : pos + 16 * (i + 1)], "big") for i in range(count)
            )
            pos += 16 * count
            shares.append(ShamirShare(x, ys))
    except IndexError as exc:
        raise InvalidMessage from exc
    if pos != len(data):
        raise InvalidMessage
    return u, v, shares[0], shares[1]
