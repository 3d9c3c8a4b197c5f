"""Protection modes for a node's local aggregate: what the node sends, how the client combines.

``plain``
    fixed-point integers in the clear, for data the policy marks as visible.
``paillier``
    each value encrypted under the analyst's Paillier key; the client multiplies the
    ciphertexts of all nodes (homomorphic addition) and decrypts only the totals.

Signed integers are embedded in ``Z_n`` as ``v mod n`` and read back from the centred
range ``(-n/2, n/2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import phe

from datafed.errors import ProtocolError

__all__ = [
    "MAX_PAILLIER_BITS",
    "MIN_PAILLIER_BITS",
    "MODES",
    "PaillierSession",
    "ProtectionSpec",
    "check_paillier_modulus",
    "protect",
]

MODES = ("plain", "paillier")
#: NIST SP 800-57 Part 1 Table 2: 2048-bit factoring moduli give 112-bit security.
MIN_PAILLIER_BITS = 2048
MAX_PAILLIER_BITS = 8192
_INT64 = 1 << 63


@dataclass(frozen=True)
class ProtectionSpec:
    """How a node must protect its values (travels inside the signed request)."""

    mode: str
    fixed_point_bits: int
    paillier_n: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown protection mode {self.mode!r}: expected one of {MODES}")
        if not 0 <= self.fixed_point_bits <= 32:
            raise ValueError(f"fixed_point_bits must be in [0, 32], got {self.fixed_point_bits}")
        if self.mode == "paillier":
            if self.paillier_n is None:
                raise ValueError("paillier protection needs the analyst's public modulus")
            check_paillier_modulus(self.paillier_n)


def check_paillier_modulus(n: int) -> None:
    """Refuse moduli that are too small, too large or even."""
    bits = n.bit_length()
    if bits < MIN_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}")
    if bits > MAX_PAILLIER_BITS:
        raise ValueError(f"Paillier modulus must be at most {MAX_PAILLIER_BITS} bits, got {bits}")
    if n % 2 == 0:
        raise ValueError("Paillier modulus must be odd")


def protect(spec: ProtectionSpec, values: Sequence[int]) -> list[int]:
    """Protect a node's fixed-point values per ``spec`` (node side)."""
    if spec.mode == "plain":
        for v in values:
            if not -_INT64 <= v < _INT64:
                raise OverflowError("aggregate does not fit in 64 bits; lower fixed_point_bits")
        return list(values)
    assert spec.paillier_n is not None
    pub = phe.PaillierPublicKey(spec.paillier_n)
    return [int(pub.raw_encrypt(v % pub.n)) for v in values]


class PaillierSession:
    """The analyst's Paillier key pair for one or more queries (client side)."""

    def __init__(self, bits: int = 3072) -> None:
        if bits < MIN_PAILLIER_BITS:
            raise ValueError(
                f"Paillier modulus must be at least {MIN_PAILLIER_BITS} bits, got {bits}"
            )
        self.public_key, self._private_key = phe.generate_paillier_keypair(n_length=bits)

    @property
    def n(self) -> int:
        """The public modulus sent to nodes."""
        return int(self.public_key.n)

    def check_ciphertext(self, c: int) -> int:
        """Return ``c`` if it is a valid ciphertext modulo n^2, else raise ProtocolError."""
        if not 0 < c < self.public_key.nsquare:
            raise ProtocolError("ciphertext out of range")
        return c

    def combine(self, per_node: Sequence[Sequence[int]]) -> list[int]:
        """Homomorphically add ciphertext vectors from several nodes."""
        nsq = self.public_key.nsquare
        out: list[int] = []
        for column in zip(*per_node, strict=True):
            acc = 1
            for c in column:
                acc = acc * self.check_ciphertext(c) % nsq
            out.append(acc)
        return out

    def decrypt(self, ciphertexts: Sequence[int]) -> list[int]:
        """Decrypt totals into signed integers."""
        n = self.n
        out = []
        for c in ciphertexts:
            m = int(self._private_key.raw_decrypt(c))
            out.append(m - n if m > n // 2 else m)
        return out
