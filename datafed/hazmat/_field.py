"""NTT-friendly prime fields of the VDAF draft: Field64 and Field128.

draft-irtf-cfrg-vdaf-20 §6.1 (Finite Fields) and §6.1.4 (Parameters).  A field
element is a plain Python ``int`` in ``[0, MODULUS)`` and a vector is a
``list[int]``: no wrapper object per element, so that the hot paths of the FLP run
as list comprehensions over machine-sized (Field64) or two-word (Field128)
integers.  The NTT and the Lagrange-basis helpers live in
:mod:`datafed.hazmat._ntt`; numpy kernels for long Field64 vectors in
:mod:`datafed.hazmat._field_np`.

Constant time: Python integers are not constant time (draft §2.1 asks it of
field arithmetic).  These fields serve aggregators, whose inputs are secret
shares, and clients on devices the city controls; side channels are out of scope
here and documented in ``docs/prio3.md``.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence

from datafed.hazmat.errors import InvalidShare

Vec = list[int]
"""A vector of field elements (each in ``[0, MODULUS)``)."""

_M64 = (1 << 64) - 1


def next_power_of_2(x: int) -> int:
    """Smallest power of two ``>= x`` (draft §2, ``next_power_of_2``).

    Parameters
    ----------
    x : int
        A positive integer.

    Returns
    -------
    int
        The power of two.
    """
    if x < 1:
        raise ValueError(f"next_power_of_2 needs a positive integer, got {x}")
    return 1 << (x - 1).bit_length()


def log2_exact(n: int) -> int:
    """``log2(n)`` for a power of two ``n`` (draft §2, ``assert_power_of_2``).

    Parameters
    ----------
    n : int
        A positive power of two.

    Returns
    -------
    int
        Its base-2 logarithm.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"{n} is not a positive power of two")
    return n.bit_length() - 1


class NttField:
    """A prime field with a multiplicative subgroup of order ``2^k`` (draft §6.1.2).

    Parameters
    ----------
    name : str
        ``"Field64"`` or ``"Field128"``.
    modulus : int
        The prime ``p``.
    encoded_size : int
        Bytes per encoded element (little-endian, draft §6.1.1).
    gen_order : int
        ``GEN_ORDER``, the power-of-two order of the generator ``7^((p-1)/GEN_ORDER)``.
    """

    def __init__(self, name: str, modulus: int, encoded_size: int, gen_order: int) -> None:
        if (modulus - 1) % gen_order:
            raise ValueError("GEN_ORDER must divide MODULUS - 1")
        self.name = name
        self.MODULUS = modulus
        self.ENCODED_SIZE = encoded_size
        self.GEN_ORDER = gen_order
        self.LOG_GEN_ORDER = log2_exact(gen_order)
        # §6.1.4: the generator is 7 ** ((p - 1) / GEN_ORDER).
        self.GENERATOR = pow(7, (modulus - 1) // gen_order, modulus)
        self._root_powers: dict[int, Vec] = {}

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        # Pickle (and copy) by name: the two fields are module-level singletons.
        return self.name

    # -- scalars ---------------------------------------------------------------
    def inv(self, x: int) -> int:
        """Multiplicative inverse.

        Parameters
        ----------
        x : int
            A non-zero element.

        Returns
        -------
        int
            ``x^-1``.
        """
        if x % self.MODULUS == 0:
            raise ZeroDivisionError("inverse of zero")
        return pow(x, -1, self.MODULUS)

    def nth_root(self, n: int) -> int:
        """The principal ``n``-th root of unity ``gen^(GEN_ORDER/n)`` (§6.1.2).

        Parameters
        ----------
        n : int
            A power of two at most ``GEN_ORDER``.

        Returns
        -------
        int
            ``W_n``.
        """
        log2_exact(n)
        if n > self.GEN_ORDER:
            raise ValueError(f"{self.name} has no {n}-th root of unity")
        return pow(self.GENERATOR, self.GEN_ORDER // n, self.MODULUS)

    def nth_root_powers(self, n: int) -> Vec:
        """``[W_n^0, ..., W_n^(n-1)]`` (§6.1.2), cached per ``n``.

        Parameters
        ----------
        n : int
            A power of two.

        Returns
        -------
        list of int
            The powers (a shared list: do not modify it).
        """
        cached = self._root_powers.get(n)
        if cached is None:
            w, p = self.nth_root(n), self.MODULUS
            cached = [1] * n
            for i in range(1, n):
                cached[i] = cached[i - 1] * w % p
            self._root_powers[n] = cached
        return cached

    # -- vectors ---------------------------------------------------------------
    def zeros(self, length: int) -> Vec:
        """A vector of ``length`` zeros."""
        if length < 0:
            raise ValueError("length must be non-negative")
        return [0] * length

    def vec_add(self, left: Sequence[int], right: Sequence[int]) -> Vec:
        """Element-wise sum (§6.1.1 ``vec_add``); lengths must match."""
        if len(left) != len(right):
            raise ValueError("mismatched vector sizes")
        p = self.MODULUS
        return [(x + y) % p for x, y in zip(left, right, strict=True)]

    def vec_sub(self, left: Sequence[int], right: Sequence[int]) -> Vec:
        """Element-wise difference (§6.1.1 ``vec_sub``); lengths must match."""
        if len(left) != len(right):
            raise ValueError("mismatched vector sizes")
        p = self.MODULUS
        return [(x - y) % p for x, y in zip(left, right, strict=True)]

    def vec_neg(self, vec: Sequence[int]) -> Vec:
        """Element-wise negation (§6.1.1 ``vec_neg``)."""
        p = self.MODULUS
        return [-x % p for x in vec]

    def vec_mul(self, left: Sequence[int], right: Sequence[int]) -> Vec:
        """Element-wise (Hadamard) product; lengths must match."""
        if len(left) != len(right):
            raise ValueError("mismatched vector sizes")
        p = self.MODULUS
        return [x * y % p for x, y in zip(left, right, strict=True)]

    def dot(self, left: Sequence[int], right: Sequence[int]) -> int:
        """Inner product, reduced once at the end (Python integers do not overflow)."""
        if len(left) != len(right):
            raise ValueError("mismatched vector sizes")
        total: int = sum(map(operator.mul, left, right))
        return total % self.MODULUS

    # -- encoding (§6.1.1) -------------------------------------------------------
    def encode_vec(self, vec: Sequence[int]) -> bytes:
        """Little-endian encoding of each element, ``ENCODED_SIZE`` bytes each.

        Parameters
        ----------
        vec : sequence of int
            Elements in ``[0, MODULUS)``.

        Returns
        -------
        bytes
            The concatenated encodings.
        """
        if self.ENCODED_SIZE == 8:
            return struct.pack(f"<{len(vec)}Q", *vec)
        size, to_bytes = self.ENCODED_SIZE, int.to_bytes
        # A list (not a generator) inside join: measured 4x faster for Field128.
        return b"".join([to_bytes(x, size, "little") for x in vec])

    def decode_vec(self, encoded: bytes) -> Vec:
        """Parse a vector; reject a length that is not a multiple, or ``x >= MODULUS``.

        Parameters
        ----------
        encoded : bytes
            Output of :meth:`encode_vec`.

        Returns
        -------
        list of int
            The elements.

        Raises
        ------
        InvalidShare
            On a bad length or an element out of range (detail-free).
        """
        if len(encoded) % self.ENCODED_SIZE:
            raise InvalidShare
        vec = self.parse_words(encoded)
        p = self.MODULUS
        if any(x >= p for x in vec):
            raise InvalidShare
        return vec

    def parse_words(self, data: bytes) -> Vec:
        """Little-endian unsigned words of ``ENCODED_SIZE`` bytes, unreduced.

        Parameters
        ----------
        data : bytes
            A multiple of ``ENCODED_SIZE`` bytes.

        Returns
        -------
        list of int
            The words, each in ``[0, 2^(8*ENCODED_SIZE))``.
        """
        words = struct.unpack(f"<{len(data) // 8}Q", data)
        if self.ENCODED_SIZE == 8:
            return list(words)
        # Two 64-bit words per element: measured faster than int.from_bytes slices.
        it = iter(words)
        return [lo | (hi << 64) for lo, hi in zip(it, it, strict=True)]


Field64 = NttField("Field64", 2**32 * 4294967295 + 1, 8, 2**32)
"""``p = 2^64 - 2^32 + 1``, generator order ``2^32`` (draft §6.1.4)."""

Field128 = NttField("Field128", 2**66 * 4611686018427387897 + 1, 16, 2**66)
"""``p = 2^66 * 4611686018427387897 + 1``, generator order ``2^66`` (draft §6.1.4)."""
