"""Packing many signed fixed-point values into one big plaintext (e.g. Paillier).

Layout: a plaintext is ``Σ_i s_i · 2^(i·slot_bits)`` where each slot ``s_i`` holds
``v_i + offset`` with ``offset = 2^(value_bits − 1)``, so a signed ``value_bits``-bit
value becomes an unsigned one below ``2^value_bits``.  Adding ``k`` packed
plaintexts adds slot-wise; slot ``i`` then holds ``Σ v + k·offset < k·2^value_bits``.
A slot therefore needs ``value_bits + ⌈log2(max_additions)⌉`` bits to avoid carries
into its neighbour, plus one guard bit that makes overflow *detectable*: after
``k`` additions every valid slot lies in ``[0, k·(2^value_bits − 1)]``, and a slot
outside that range (or a carry into the guard bit) raises
:class:`~datafed.hazmat.errors.PackingOverflow` on unpack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from datafed.hazmat.errors import PackingOverflow

GUARD_BITS = 1
"""Spare bits per slot that turn a carry from too many additions into a detectable error."""


class Packer:
    """Pack signed fixed-point values into integers below ``2^(modulus_bits − 1)``.

    Parameters
    ----------
    modulus_bits : int
        Bit length of the plaintext modulus (for Paillier, ``n.bit_length()``).
    value_bits : int, optional
        Bits of one signed fixed-point value, sign included (default 64).
    frac_bits : int, optional
        Fractional bits of the fixed-point encoding (default 0: integers).
    max_additions : int, optional
        Number of packed plaintexts that may be added together (default 1).
    """

    def __init__(
        self,
        *,
        modulus_bits: int,
        value_bits: int = 64,
        frac_bits: int = 0,
        max_additions: int = 1,
    ) -> None:
        if value_bits < 2:
            raise ValueError(f"value_bits must be at least 2, got {value_bits}")
        if not 0 <= frac_bits < value_bits:
            raise ValueError(f"frac_bits must be in [0, value_bits), got {frac_bits}")
        if max_additions < 1:
            raise ValueError(f"max_additions must be at least 1, got {max_additions}")
        self.modulus_bits = modulus_bits
        self.value_bits = value_bits
        self.frac_bits = frac_bits
        self.max_additions = max_additions
        headroom = math.ceil(math.log2(max_additions)) if max_additions > 1 else 0
        self.slot_bits = value_bits + headroom + GUARD_BITS
        # Keep the packed integer below 2^(modulus_bits − 1) < n so it never wraps mod n.
        self.slots = (modulus_bits - 1) // self.slot_bits
        if self.slots < 1:
            raise ValueError(
                f"a {self.slot_bits}-bit slot does not fit a {modulus_bits}-bit modulus"
            )
        self._offset = 1 << (value_bits - 1)
        self._mask = (1 << self.slot_bits) - 1

    def __repr__(self) -> str:
        return (
            f"Packer(modulus_bits={self.modulus_bits}, value_bits={self.value_bits}, "
            f"frac_bits={self.frac_bits}, max_additions={self.max_additions}, slots={self.slots})"
        )

    def plaintexts_for(self, count: int) -> int:
        """Return how many plaintexts ``count`` values need.

        Parameters
        ----------
        count : int
            Number of values.

        Returns
        -------
        int
            ``⌈count / slots⌉``.
        """
        return -(-count // self.slots)

    def encode(self, value: float | int | Fraction) -> int:
        """Return the fixed-point integer ``round(value · 2^frac_bits)``, range-checked.

        Parameters
        ----------
        value : float, int or Fraction
            The value.

        Returns
        -------
        int
            The signed fixed-point integer.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
            raise TypeError(f"packed value must be a number, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"packed value must be finite, got {value}")
        fixed = (
            value << self.frac_bits
            if isinstance(value, int)
            else round(value * (1 << self.frac_bits))
        )
        if not -self._offset <= fixed < self._offset:
            raise ValueError(
                f"value {value} does not fit {self.value_bits} signed bits "
                f"with {self.frac_bits} fractional bits"
            )
        return int(fixed)

    def pack(self, values: Sequence[float | int | Fraction]) -> list[int]:
        """Pack ``values`` (fixed-point encoded) into ``plaintexts_for(len(values))`` integers.

        Parameters
        ----------
        values : sequence of numbers
            The values, in order.

        Returns
        -------
        list of int
            The packed plaintexts, each in ``[0, 2^(modulus_bits − 1))``.
        """
        fixed = [self.encode(v) + self._offset for v in values]
        out: list[int] = []
        for start in range(0, len(fixed), self.slots):
            packed = 0
            for slot in reversed(fixed[start : start + self.slots]):
                packed = (packed << self.slot_bits) | slot
            out.append(packed)
        return out

    def unpack(self, plaintexts: Sequence[int], *, count: int, additions: int = 1) -> list[int]:
        """Recover the fixed-point sums from ``additions`` added packed plaintexts.

        Parameters
        ----------
        plaintexts : sequence of int
            Decrypted packed plaintexts.
        count : int
            Number of values that were packed.
        additions : int, optional
            How many packed plaintexts were added together (default 1).

        Returns
        -------
        list of int
            The signed fixed-point sums (divide by ``2^frac_bits``, see :meth:`decode`).

        Raises
        ------
        PackingOverflow
            If a slot lies outside the range ``additions`` values can produce.
        """
        if not 1 <= additions <= self.max_additions:
            raise ValueError(f"additions must be in [1, {self.max_additions}], got {additions}")
        if len(plaintexts) != self.plaintexts_for(count):
            raise ValueError(f"{count} values need {self.plaintexts_for(count)} plaintexts")
        top = additions * ((1 << self.value_bits) - 1)
        shift = additions * self._offset
        out: list[int] = []
        for packed in plaintexts:
            if packed < 0 or packed >> (self.slots * self.slot_bits):
                raise PackingOverflow
            for _ in range(min(self.slots, count - len(out))):
                slot = packed & self._mask
                if slot > top:
                    raise PackingOverflow
                out.append(slot - shift)
                packed >>= self.slot_bits
            if packed:  # bits beyond the last used slot
                raise PackingOverflow
        return out

    def decode(self, fixed: Sequence[int]) -> list[Fraction]:
        """Return fixed-point integers as exact fractions ``v / 2^frac_bits``.

        Parameters
        ----------
        fixed : sequence of int
            Fixed-point integers (from :meth:`unpack`).

        Returns
        -------
        list of Fraction
            The exact values.
        """
        scale = 1 << self.frac_bits
        return [Fraction(v, scale) for v in fixed]
