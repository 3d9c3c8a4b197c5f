"""Paillier encryption over gmpy2, compatible with ``phe`` (python-paillier).

Keys use ``g = n + 1`` as ``phe`` does, so a ciphertext of ours is a valid ``phe``
ciphertext (exponent 0) and back.  Encryption draws its randomness from a
Damgård–Jurik–Nielsen fixed-base table (:mod:`datafed.hazmat._djn`); decryption
uses the CRT over ``p²`` and ``q²`` (Paillier, EUROCRYPT 1999, §7).

Parameter floor: a 2048-bit modulus (112-bit security, NIST SP 800-57 Part 1
Rev. 5, Table 2); the default is 3072 bits (128-bit security).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2

from datafed.hazmat._djn import FixedBaseTable, exponent_bits, random_base
from datafed.hazmat.errors import InvalidCiphertext

MIN_MODULUS_BITS = 2048
"""Smallest modulus accepted: 112-bit security (NIST SP 800-57 Part 1 Rev. 5, Table 2)."""

DEFAULT_MODULUS_BITS = 3072
"""Default modulus: 128-bit security (NIST SP 800-57 Part 1 Rev. 5, Table 2)."""


def check_modulus_bits(bits: int) -> None:
    """Raise if ``bits`` is not an acceptable Paillier modulus length.

    Parameters
    ----------
    bits : int
        Proposed modulus length.

    Raises
    ------
    TypeError
        If ``bits`` is not an int.
    ValueError
        If ``bits`` is below 2048 or odd.
    """
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise TypeError(f"Paillier modulus bits must be an int, got {type(bits).__name__}")
    if bits < MIN_MODULUS_BITS:
        raise ValueError(f"Paillier modulus must be at least {MIN_MODULUS_BITS} bits, got {bits}")
    if bits % 2:
        raise ValueError(f"Paillier modulus bits must be even, got {bits}")


class PaillierCiphertext:
    """A Paillier ciphertext bound to its public key.

    Build one with :meth:`PaillierPublicKey.encrypt` or, for bytes or integers
    from the wire, with :meth:`PaillierPublicKey.ciphertext_from_bytes` /
    :meth:`PaillierPublicKey.ciphertext_from_int`, which validate it.
    ``a + b`` adds two ciphertexts (or a ciphertext and a plaintext int).
    """

    __slots__ = ("public_key", "value")

    def __init__(self, public_key: PaillierPublicKey, value: Any) -> None:
        self.public_key = public_key
        self.value = value

    def __add__(self, other: PaillierCiphertext | int) -> PaillierCiphertext:
        if isinstance(other, PaillierCiphertext):
            return self.public_key.raw_add(self, other)
        if isinstance(other, int):
            return self.public_key.add_plain(self, other)
        return NotImplemented

    __radd__ = __add__

    def __int__(self) -> int:
        return int(self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PaillierCiphertext):
            return NotImplemented
        return self.public_key == other.public_key and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.public_key.n, int(self.value)))

    def __repr__(self) -> str:
        return f"PaillierCiphertext(<{self.public_key.bits}-bit key>)"

    def to_bytes(self) -> bytes:
        """Return the fixed-length big-endian encoding (``ciphertext_bytes`` long).

        Returns
        -------
        bytes
            The encoded ciphertext.
        """
        return int(self.value).to_bytes(self.public_key.ciphertext_bytes, "big")


class PaillierPublicKey:
    """A Paillier public key ``n`` (generator ``g = n + 1``).

    Parameters
    ----------
    n : int
        The modulus, at least 2048 bits.
    strict : bool, optional
        Use full-length random exponents (see :mod:`datafed.hazmat._djn`);
        default ``False`` (DJN short exponents).
    djn_base : int, optional
        A fixed base ``h_s``; by default a fresh one is drawn on first use.
    """

    def __init__(self, n: int, *, strict: bool = False, djn_base: int | None = None) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"Paillier modulus must be an int, got {type(n).__name__}")
        if n.bit_length() < MIN_MODULUS_BITS:
            raise ValueError(
                f"Paillier modulus must be at least {MIN_MODULUS_BITS} bits, got {n.bit_length()}"
            )
        if n % 2 == 0:
            raise ValueError("Paillier modulus must be odd")
        self.n = n
        self.strict = strict
        self._n = gmpy2.mpz(n)
        self._n2 = self._n * self._n
        self._base = None if djn_base is None else gmpy2.mpz(djn_base)
        self._table: FixedBaseTable | None = None

    @property
    def bits(self) -> int:
        """Bit length of ``n``."""
        return self.n.bit_length()

    @property
    def n_squared(self) -> int:
        """The ciphertext modulus ``n²``."""
        return int(self._n2)

    @property
    def ciphertext_bytes(self) -> int:
        """Length of a ciphertext's wire encoding in bytes."""
        return (int(self._n2).bit_length() + 7) // 8

    @property
    def djn_base(self) -> int:
        """The fixed DJN base ``h_s`` (drawn on first use)."""
        if self._base is None:
            self._base = random_base(self._n, self._n2)
        return int(self._base)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PaillierPublicKey):
            return NotImplemented
        return self.n == other.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.bits}, strict={self.strict})"

    def precompute(self) -> None:
        """Build the fixed-base table now instead of on the first encryption."""
        if self._table is None:
            self.djn_base  # noqa: B018 - draws the base
            bits = exponent_bits(self.bits, strict=self.strict)
            self._table = FixedBaseTable(self._base, self._n2, bits, root=self._n)

    def _residue(self, m: int) -> Any:
        """Check a plaintext and return it modulo ``n`` (negatives wrap)."""
        if not isinstance(m, int) or isinstance(m, bool):
            raise TypeError(f"Paillier plaintext must be an int, got {type(m).__name__}")
        if not -(self.n // 2) <= m < self.n:
            raise ValueError("Paillier plaintext out of range [-(n//2), n)")
        return m % self._n

    def _plain(self, m: int) -> Any:
        # (1 + n)^m = 1 + m·n mod n² (binomial theorem), so no exponentiation is needed.
        return 1 + self._residue(m) * self._n

    def random_mask(self) -> Any:
        """Return fresh randomness ``h_s^α mod n²`` (an encryption of zero).

        Returns
        -------
        gmpy2.mpz
            The random ``n``-th residue.
        """
        self.precompute()
        assert self._table is not None
        return self._table.random_power()

    def encrypt(self, m: int) -> PaillierCiphertext:
        """Encrypt an integer ``m`` with ``-(n//2) <= m < n`` (negatives wrap mod n).

        Parameters
        ----------
        m : int
            The plaintext.

        Returns
        -------
        PaillierCiphertext
            A fresh ciphertext.
        """
        return PaillierCiphertext(self, self._encrypt_residue(self._residue(m)))

    def _encrypt_residue(self, m: Any) -> Any:
        """``(1 + n)^m · h_s^α mod n²`` for ``m`` in ``[0, n)``: one pass of the table."""
        self.precompute()
        assert self._table is not None
        return self._table.random_power(m)

    def encrypt_many(self, values: Iterable[int]) -> list[PaillierCiphertext]:
        """Encrypt every value in ``values`` on this core (see :class:`BatchEncryptor`).

        Parameters
        ----------
        values : iterable of int
            The plaintexts.

        Returns
        -------
        list of PaillierCiphertext
            One ciphertext per value, in order.
        """
        return [self.encrypt(m) for m in values]

    def encrypt_with_r(self, m: int, r: int) -> PaillierCiphertext:
        """Encrypt with explicit textbook randomness ``r^n`` (known-answer tests).

        Parameters
        ----------
        m : int
            The plaintext.
        r : int
            A unit of ``Z_n``.

        Returns
        -------
        PaillierCiphertext
            ``(1 + m·n) · r^n mod n²``.
        """
        if not 0 < r < self.n or gmpy2.gcd(r, self._n) != 1:
            raise ValueError("Paillier randomness r must be a unit of Z_n")
        rn = gmpy2.powmod(gmpy2.mpz(r), self._n, self._n2)
        return PaillierCiphertext(self, gmpy2.f_mod(self._plain(m) * rn, self._n2))

    def _own(self, c: PaillierCiphertext) -> Any:
        if not isinstance(c, PaillierCiphertext):
            raise TypeError(f"expected PaillierCiphertext, got {type(c).__name__}")
        if c.public_key.n != self.n:
            raise ValueError("ciphertext belongs to a different Paillier key")
        return c.value

    def raw_add(self, a: PaillierCiphertext, b: PaillierCiphertext) -> PaillierCiphertext:
        """Return an encryption of the sum of the plaintexts of ``a`` and ``b``.

        Parameters
        ----------
        a, b : PaillierCiphertext
            Ciphertexts under this key.

        Returns
        -------
        PaillierCiphertext
            ``a · b mod n²``.
        """
        return PaillierCiphertext(self, gmpy2.f_mod(self._own(a) * self._own(b), self._n2))

    def add_many(self, ciphertexts: Iterable[PaillierCiphertext]) -> PaillierCiphertext:
        """Return an encryption of the sum of all plaintexts (zero when empty).

        Parameters
        ----------
        ciphertexts : iterable of PaillierCiphertext
            Ciphertexts under this key.

        Returns
        -------
        PaillierCiphertext
            The product of the ciphertexts mod ``n²`` (not re-randomized).
        """
        acc, n2, f_mod = gmpy2.mpz(1), self._n2, gmpy2.f_mod
        for c in ciphertexts:
            acc = f_mod(acc * self._own(c), n2)
        return PaillierCiphertext(self, acc)

    def add_plain(self, c: PaillierCiphertext, m: int) -> PaillierCiphertext:
        """An encryption of ``Dec(c) + m`` for ``c`` under this key, ``m`` in range.

        The result is not re-randomized (:meth:`rerandomize` it before it leaves).
        """
        return PaillierCiphertext(self, gmpy2.f_mod(self._own(c) * self._plain(m), self._n2))

    def mul_plain(self, c: PaillierCiphertext, k: int) -> PaillierCiphertext:
        """An encryption of ``k · Dec(c) mod n`` (``c^k mod n²``; a negative ``k`` mod ``n``).

        The result is not re-randomized.
        """
        return PaillierCiphertext(self, gmpy2.powmod(self._own(c), k % self.n, self._n2))

    def rerandomize(self, c: PaillierCiphertext) -> PaillierCiphertext:
        """Return a fresh-looking ciphertext of the same plaintext.

        Parameters
        ----------
        c : PaillierCiphertext
            A ciphertext under this key.

        Returns
        -------
        PaillierCiphertext
            ``c · h_s^α mod n²``.
        """
        return PaillierCiphertext(self, gmpy2.f_mod(self._own(c) * self.random_mask(), self._n2))

    def ciphertext_from_int(self, value: int) -> PaillierCiphertext:
        """Validate an integer from the wire as a ciphertext under this key.

        Parameters
        ----------
        value : int
            The claimed ciphertext.

        Returns
        -------
        PaillierCiphertext
            The ciphertext.

        Raises
        ------
        InvalidCiphertext
            If ``value`` is not in ``Z*_{n²}`` (range ``0 < c < n²`` and ``gcd(c, n) = 1``).
        """
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"ciphertext must be an int, got {type(value).__name__}")
        c = gmpy2.mpz(value)
        if not 0 < c < self._n2 or gmpy2.gcd(c, self._n) != 1:
            raise InvalidCiphertext
        return PaillierCiphertext(self, c)

    def ciphertext_from_bytes(self, data: bytes) -> PaillierCiphertext:
        """Validate a big-endian ciphertext of exactly :attr:`ciphertext_bytes` bytes.

        Raises :class:`InvalidCiphertext` if the length is wrong or the value is not in
        ``Z*_{n²}``.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"ciphertext must be bytes, got {type(data).__name__}")
        if len(data) != self.ciphertext_bytes:
            raise InvalidCiphertext
        return self.ciphertext_from_int(int.from_bytes(data, "big"))


def check_ciphertexts(
    public_key: PaillierPublicKey, ciphertexts: Sequence[PaillierCiphertext]
) -> list[Any]:
    """Return the raw values of ``ciphertexts`` after checking they use ``public_key``.

    Parameters
    ----------
    public_key : PaillierPublicKey
        The expected key.
    ciphertexts : sequence of PaillierCiphertext
        Ciphertexts to check.

    Returns
    -------
    list of gmpy2.mpz
        The raw ciphertext values.
    """
    return [public_key._own(c) for c in ciphertexts]
