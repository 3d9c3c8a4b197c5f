"""Vector validity circuits of Prio3 (draft-irtf-cfrg-vdaf-20 §7.4.3 to §7.4.5).

SumVec, Histogram and MultihotCountVec check that every encoded element is a bit
with one ``ParallelSum(Mul(), chunk_length)`` gadget and random weights from the
joint randomness (the randomised range check of §7.3.1.1), plus affine checks:
Histogram that the bits sum to one, MultihotCountVec that they sum to the
reported weight.  :func:`optimal_chunk_length` picks the chunk length that
minimises the proof (§7.4.3.1 leaves the choice to trial).
"""

from __future__ import annotations

from datafed.hazmat._field import NttField, Vec
from datafed.hazmat._flp_circuits import (
    _RangeChecked,
    decode_range_checked_int,
    encode_range_checked_int,
    range_checked_weights,
)
from datafed.hazmat._flp_gadgets import gadget_poly_len, wire_poly_len


def optimal_chunk_length(meas_len: int) -> int:
    """The ``chunk_length`` giving the shortest proof for ``meas_len`` elements.

    Proof length of one ``ParallelSum(Mul(), c)`` gadget is
    ``2c + gadget_poly_len(2, wire_poly_len(ceil(meas_len / c)))`` (§7.3.2); the
    draft recommends ``c`` near ``sqrt(meas_len)`` and notes that rounding makes
    the optimum a matter of trial (§7.4.3.1), so try every ``c``.

    Parameters
    ----------
    meas_len : int
        Length of the encoded measurement.

    Returns
    -------
    int
        The chunk length (the smallest among ties).
    """
    if meas_len < 1:
        raise ValueError("meas_len must be positive")

    def proof_len(c: int) -> int:
        calls = (meas_len + c - 1) // c
        return 2 * c + gadget_poly_len(2, wire_poly_len(calls))

    return min(range(1, meas_len + 1), key=lambda c: (proof_len(c), c))


class SumVecCircuit(_RangeChecked[list[int], list[int]]):
    """SumVec (§7.4.3): ``length`` integers, each in ``[0, max_measurement]``.

    Parameters
    ----------
    field : NttField
        The field (Field128 in Prio3SumVec).
    length : int
        Vector length.
    max_measurement : int
        Largest valid element.
    chunk_length : int
        ``ParallelSum`` chunk length.
    """

    EVAL_OUTPUT_LEN = 1

    def __init__(
        self, field: NttField, length: int, max_measurement: int, chunk_length: int
    ) -> None:
        if length < 1 or not 0 < max_measurement < field.MODULUS:
            raise ValueError("SumVec needs length >= 1 and max_measurement in [1, MODULUS)")
        self.length = length
        self.max_measurement = max_measurement
        self.bits = max_measurement.bit_length()
        self._setup(field, length * self.bits, length, chunk_length)

    def encode(self, measurement: list[int]) -> Vec:
        """Concatenated range-checked encodings of the elements."""
        if len(measurement) != self.length:
            raise ValueError("SumVec measurement has the wrong length")
        bound = self.max_measurement
        if any(not 0 <= x <= bound for x in measurement):
            raise ValueError("measurement out of range")
        # encode_range_checked_int (§7.4.2) vectorised: bit l of every element at once.
        b = self.bits
        rest_all_ones = 2 ** (b - 1) - 1
        last_weight = bound - rest_all_ones
        lasts = [int(x > rest_all_ones) for x in measurement]
        rests = [x - last_weight * last for x, last in zip(measurement, lasts, strict=True)]
        out = [0] * (self.length * b)
        for l_ in range(b - 1):
            out[l_::b] = [(r >> l_) & 1 for r in rests]
        out[b - 1 :: b] = lasts
        return out

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """The sum of the range-check calls."""
        return [sum(gadget_outputs[0]) % self.field.MODULUS]

    def truncate(self, meas: Vec) -> Vec:
        """Each element's weighted bit sum."""
        # Vectorised over elements: bit l of every element is the slice meas[l::bits].
        p, b = self.field.MODULUS, self.bits
        weights = range_checked_weights(self.max_measurement)
        if b == 1:  # one bit of weight 1: the elements themselves, already reduced
            return list(meas)
        acc = list(meas[0::b])
        for l_, w in enumerate(weights[1:], start=1):
            acc = [x + w * y for x, y in zip(acc, meas[l_::b], strict=True)]
        return [x % p for x in acc]


class HistogramCircuit(_RangeChecked[int, list[int]]):
    """Histogram (§7.4.4): a one-hot vector of ``length`` buckets.

    Parameters
    ----------
    field : NttField
        The field (Field128 in Prio3Histogram).
    length : int
        Number of buckets.
    chunk_length : int
        ``ParallelSum`` chunk length.
    """

    EVAL_OUTPUT_LEN = 2

    def __init__(self, field: NttField, length: int, chunk_length: int) -> None:
        if length < 1:
            raise ValueError("Histogram needs at least one bucket")
        self.length = length
        self._setup(field, length, length, chunk_length)

    def encode(self, measurement: int) -> Vec:
        """One-hot encoding of the bucket index."""
        if not 0 <= measurement < self.length:
            raise ValueError("bucket index out of range")
        out = [0] * self.length
        out[measurement] = 1
        return out

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """Range check, and ``sum(buckets) - 1`` (the constant scaled by 1/num_shares)."""
        p = self.field.MODULUS
        range_check = sum(gadget_outputs[0]) % p
        sum_check = (sum(meas) - self.field.inv(num_shares)) % p
        return [range_check, sum_check]

    def truncate(self, meas: Vec) -> Vec:
        """The buckets."""
        return list(meas)


class MultihotCountVecCircuit(_RangeChecked[list[bool], list[int]]):
    """MultihotCountVec (§7.4.5): booleans with at most ``max_weight`` set.

    Parameters
    ----------
    field : NttField
        The field (Field128 in Prio3MultihotCountVec).
    length : int
        Number of entries.
    max_weight : int
        Largest number of true entries.
    chunk_length : int
        ``ParallelSum`` chunk length.
    """

    EVAL_OUTPUT_LEN = 2

    def __init__(self, field: NttField, length: int, max_weight: int, chunk_length: int) -> None:
        if length < 1 or not 0 < max_weight <= length:
            raise ValueError("MultihotCountVec needs 0 < max_weight <= length")
        if field.MODULUS <= length:
            raise ValueError("length is too large for the field")
        self.length = length
        self.max_weight = max_weight
        self.bits_for_weight = max_weight.bit_length()
        self._setup(field, length + self.bits_for_weight, length, chunk_length)

    def encode(self, measurement: list[bool]) -> Vec:
        """The entries, then the range-checked encoding of their weight."""
        if len(measurement) != self.length:
            raise ValueError("MultihotCountVec measurement has the wrong length")
        count = [int(bool(x)) for x in measurement]
        return count + encode_range_checked_int(self.field, sum(count), self.max_weight)

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """Range check, and the true weight minus the reported weight."""
        p = self.field.MODULUS
        range_check = sum(gadget_outputs[0]) % p
        reported = decode_range_checked_int(self.field, meas[self.length :], self.max_weight)
        weight_check = (sum(meas[: self.length]) - reported) % p
        return [range_check, weight_check]

    def truncate(self, meas: Vec) -> Vec:
        """The entries."""
        return list(meas[: self.length])
