"""Wire forms of the secure-aggregation round messages (``protocol.proto``).

Converts between :mod:`datafed.protocols` messages and their protobuf messages; every
decoder checks sizes and raises ValueError, so a malformed message never reaches the
state machines.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.hazmat import ShamirShare
from datafed.proto.v1 import protocol_pb2
from datafed.protocols import (
    AdvertiseKeys,
    ForwardedShares,
    MaskedInput,
    ShareKeys,
    Survivors,
    UnmaskShares,
    consistency_message,
)

__all__ = [
    "ADVERTISE_CONTEXT",
    "CONSISTENCY_CONTEXT",
    "advertise_digest",
    "advertise_from_proto",
    "ciphertexts_from_proto",
    "ciphertexts_to_proto",
    "consistency_digest",
    "consistency_signers",
    "forwarded_from_proto",
    "masked_from_proto",
    "share_keys_from_proto",
    "unmask_from_proto",
    "unmask_to_proto",
]

#: Domain separation of a node's signature over its advertised secagg keys.
ADVERTISE_CONTEXT = b"datafed/v1/secagg-advertise\x00"
#: Domain separation of a node's round-3 signature over the survivor set.
CONSISTENCY_CONTEXT = b"datafed/v1/secagg-consistency\x00"
#: X25519 public keys are 32 bytes (RFC 7748 §5).
KEY_BYTES = 32
#: Shamir shares of a 32-byte key: a length element and three 15-byte chunks.
MAX_SHARE_ELEMENTS = 8
MAX_CIPHERTEXT_BYTES = 4096
_Y_BYTES = 16


def advertise_digest(binding: str, client_id: int, c_public: bytes, s_public: bytes) -> bytes:
    """The bytes a node signs over its advertised keys: context, job, id, both keys."""
    return (
        ADVERTISE_CONTEXT
        + binding.encode()
        + b"\x00"
        + client_id.to_bytes(4, "big")
        + c_public
        + s_public
    )


def consistency_digest(binding: str, survivors: Survivors) -> bytes:
    """The bytes a node signs in round 3: context, job, the protocol's survivor message."""
    return CONSISTENCY_CONTEXT + binding.encode() + b"\x00" + consistency_message(survivors)


def consistency_signers(
    request: protocol_pb2.SecAggUnmaskRequest,
    binding: str,
    keys: Sequence[ed25519.Ed25519PublicKey],
) -> tuple[Survivors, frozenset[int]]:
    """Check round 4's signatures (client id ``i`` signs with ``keys[i - 1]``).

    Returns the survivor set and the ids whose signatures over it verify; an unknown id,
    a repeated one or a signature that does not verify is a ValueError (a relaying
    analyst that forges or mixes signatures is caught here, not counted).
    """
    survivors = Survivors(tuple(request.clients))
    digest = consistency_digest(binding, survivors)
    signers: set[int] = set()
    for item in request.signatures:
        if not 1 <= item.client_id <= len(keys) or item.client_id in signers:
            raise ValueError("round 4 names an unknown or repeated signer")
        try:
            keys[item.client_id - 1].verify(bytes(item.signature), digest)
        except Exception as exc:  # cryptography's InvalidSignature
            raise ValueError("a survivor-set signature does not verify") from exc
        signers.add(item.client_id)
    return survivors, frozenset(signers)


def advertise_from_proto(
    msg: protocol_pb2.SecAggAdvertise, binding: str, signer: ed25519.Ed25519PublicKey
) -> AdvertiseKeys:
    """Check an advertisement's key sizes and its signature by ``signer``."""
    c, s = bytes(msg.c_public), bytes(msg.s_public)
    if len(c) != KEY_BYTES or len(s) != KEY_BYTES:
        raise ValueError("advertised keys must be 32 bytes each")
    try:
        signer.verify(bytes(msg.signature), advertise_digest(binding, msg.client_id, c, s))
    except Exception as exc:  # cryptography's InvalidSignature
        raise ValueError("an advertised key is not signed by its node") from exc
    return AdvertiseKeys(msg.client_id, c, s)


def ciphertexts_to_proto(pairs: Sequence[tuple[int, bytes]]) -> list[protocol_pb2.SecAggCiphertext]:
    """``(peer, ciphertext)`` pairs as messages."""
    return [protocol_pb2.SecAggCiphertext(peer=p, ciphertext=c) for p, c in pairs]


def ciphertexts_from_proto(
    items: Sequence[protocol_pb2.SecAggCiphertext], limit: int
) -> tuple[tuple[int, bytes], ...]:
    """Messages as ``(peer, ciphertext)`` pairs, at most ``limit`` of bounded size."""
    if len(items) > limit or any(len(i.ciphertext) > MAX_CIPHERTEXT_BYTES for i in items):
        raise ValueError("too many or too large share ciphertexts")
    return tuple((i.peer, bytes(i.ciphertext)) for i in items)


def share_keys_from_proto(raw: bytes, limit: int) -> ShareKeys:
    """Round 1 reply of a node."""
    msg = protocol_pb2.SecAggShareKeys.FromString(raw)
    return ShareKeys(msg.client_id, ciphertexts_from_proto(msg.ciphertexts, limit))


def forwarded_from_proto(raw: bytes, limit: int) -> ForwardedShares:
    """Round 2 request to a node: the ciphertexts addressed to it."""
    msg = protocol_pb2.SecAggShareKeys.FromString(raw)
    return ForwardedShares(msg.client_id, ciphertexts_from_proto(msg.ciphertexts, limit))


def masked_from_proto(raw: bytes) -> MaskedInput:
    """Round 2 reply of a node."""
    msg = protocol_pb2.SecAggMasked.FromString(raw)
    return MaskedInput(msg.client_id, bytes(msg.masked))


def _shares_to_proto(
    pairs: Sequence[tuple[int, ShamirShare]],
) -> list[protocol_pb2.SecAggShamirShare]:
    return [
        protocol_pb2.SecAggShamirShare(owner=v, ys=[y.to_bytes(_Y_BYTES, "big") for y in s.ys])
        for v, s in pairs
    ]


def _shares_from_proto(
    items: Sequence[protocol_pb2.SecAggShamirShare], x: int, limit: int
) -> tuple[tuple[int, ShamirShare], ...]:
    if len(items) > limit:
        raise ValueError("too many unmasking shares")
    out = []
    for item in items:
        if not 0 < len(item.ys) <= MAX_SHARE_ELEMENTS or any(len(y) != _Y_BYTES for y in item.ys):
            raise ValueError("malformed unmasking share")
        out.append((item.owner, ShamirShare(x, tuple(int.from_bytes(y, "big") for y in item.ys))))
    return tuple(out)


def unmask_to_proto(msg: UnmaskShares) -> protocol_pb2.SecAggUnmask:
    """Round 3 reply of a node as a message."""
    return protocol_pb2.SecAggUnmask(
        client_id=msg.sender,
        self_mask_shares=_shares_to_proto(msg.self_mask_shares),
        key_shares=_shares_to_proto(msg.key_shares),
    )


def unmask_from_proto(raw: bytes, limit: int) -> UnmaskShares:
    """Round 3 reply of a node; every share's point is the sender's id."""
    msg = protocol_pb2.SecAggUnmask.FromString(raw)
    x = msg.client_id
    return UnmaskShares(
        x,
        _shares_from_proto(msg.self_mask_shares, x, limit),
        _shares_from_proto(msg.key_shares, x, limit),
    )
