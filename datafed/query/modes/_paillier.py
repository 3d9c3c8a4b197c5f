"""``paillier``: each node encrypts its values under the analyst's Paillier key.

The client multiplies the ciphertexts of every node (homomorphic addition) and decrypts
only the totals.  Signed integers are embedded in ``Z_n`` as ``v mod n`` and read back
from the centred range ``(-n/2, n/2]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import phe
from google.protobuf.message import DecodeError

from datafed.errors import ProtocolError
from datafed.proto.v1 import modes_pb2
from datafed.query.components import Component
from datafed.query.modes._base import NodeEnv, ProtectionMode

__all__ = ["MAX_PAILLIER_BITS", "MIN_PAILLIER_BITS", "PaillierMode", "check_paillier_modulus"]

#: NIST SP 800-57 Part 1 Table 2: 2048-bit factoring moduli give 112-bit security.
MIN_PAILLIER_BITS = 2048
MAX_PAILLIER_BITS = 8192


def check_paillier_modulus(n: int) -> None:
    """Refuse moduli that are too small, too large or even."""
    bits = n.bit_length()
    if bits < MIN_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}")
    if bits > MAX_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at most {MAX_PAILLIER_BITS} bits, got {bits}")
    if n % 2 == 0:
        raise ValueError("Paillier modulus must be odd")


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


class PaillierMode(ProtectionMode):
    """Paillier-encrypted values; the analyst holds the private key."""

    name = "paillier"

    def __init__(self, bits: int = 3072) -> None:
        if bits < MIN_PAILLIER_BITS:
            raise ValueError(
                f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}"
            )
        self.bits = bits
        self._keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey] | None = None

    # ------------------------------------------------------------------ node side
    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Encrypt each value under the analyst's modulus from ``params``."""
        try:
            n = _int(modes_pb2.PaillierParams.FromString(params).n)
        except DecodeError as exc:
            raise ValueError("malformed Paillier parameters") from exc
        check_paillier_modulus(n)
        pub = phe.PaillierPublicKey(n)
        cts = [int(pub.raw_encrypt(v % n)) for v in values]
        size = (2 * n.bit_length() + 7) // 8
        return modes_pb2.PaillierPayload(
            ciphertexts=[c.to_bytes(size, "big") for c in cts]
        ).SerializeToString()

    # ---------------------------------------------------------------- client side
    async def _keypair(self) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
        if self._keys is not None:
            return self._keys
        pub, priv = await asyncio.to_thread(phe.generate_paillier_keypair, n_length=self.bits)
        self._keys = (pub, priv)
        return pub, priv

    async def params(self) -> bytes:
        """The analyst's public modulus (the key pair is made on first use)."""
        pub, _ = await self._keypair()
        n = int(pub.n)
        return modes_pb2.PaillierParams(
            n=n.to_bytes((n.bit_length() + 7) // 8, "big")
        ).SerializeToString()

    def combine(
        self, payloads: Sequence[bytes], comps: Sequence[Component], n_groups: int
    ) -> list[int]:
        """Multiply ciphertexts across nodes and decrypt the totals."""
        if self._keys is None:
            raise ProtocolError("no Paillier key pair: params() was never called")
        pub, priv = self._keys
        n, nsq = int(pub.n), int(pub.nsquare)
        want = n_groups * len(comps)
        acc = [1] * want
        for raw in payloads:
            try:
                cts = [_int(c) for c in modes_pb2.PaillierPayload.FromString(raw).ciphertexts]
            except DecodeError as exc:
                raise ProtocolError("malformed Paillier payload") from exc
            if len(cts) != want:
                raise ProtocolError("Paillier payload has the wrong number of ciphertexts")
            for i, c in enumerate(cts):
                if not 0 < c < nsq:
                    raise ProtocolError("ciphertext out of range")
                acc[i] = acc[i] * c % nsq
        out = []
        for c in acc:
            m = int(priv.raw_decrypt(c))
            out.append(m - n if m > n // 2 else m)
        return out
