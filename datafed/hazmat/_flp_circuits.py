"""Validity circuits of Prio3 (draft-irtf-cfrg-vdaf-20 §7.3.2, §7.4).

A circuit here is split in two halves so that every gadget call is vectorised:

* :meth:`Valid.wire_inputs` gives, per gadget, the input wires of all its calls
  (``ARITY`` rows of ``GADGET_CALLS`` values), computed affinely from the
  measurement (share) and the joint randomness;
* :meth:`Valid.eval_output` combines the gadget outputs with affine gates into the
  circuit output.

This is the draft's ``eval`` for every circuit whose gadget inputs do not depend
on another gadget's output, which holds for all circuits of §7.4.  Constants
added to wires are scaled by ``1 / num_shares`` (§7.3.2) so that each aggregator
computes a share of the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from datafed.hazmat._field import NttField, Vec
from datafed.hazmat._flp_gadgets import Gadget, Mul, ParallelSum, PolyEval

M = TypeVar("M")
R = TypeVar("R")


class Valid(Generic[M, R]):
    """A validity circuit (§7.3.2): measurement type ``M``, aggregate result ``R``."""

    field: NttField
    GADGETS: list[Gadget]
    GADGET_CALLS: list[int]
    MEAS_LEN: int
    JOINT_RAND_LEN: int
    EVAL_OUTPUT_LEN: int
    OUTPUT_LEN: int

    def encode(self, measurement: M) -> Vec:
        """The measurement as ``MEAS_LEN`` field elements."""
        raise NotImplementedError

    def wire_inputs(self, meas: Vec, joint_rand: Vec, num_shares: int) -> list[list[Vec]]:
        """Per gadget, ``ARITY`` rows of the input wire of each call."""
        raise NotImplementedError

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """The ``EVAL_OUTPUT_LEN`` circuit outputs from the gadget outputs."""
        raise NotImplementedError

    def truncate(self, meas: Vec) -> Vec:
        """The aggregatable ``OUTPUT_LEN`` part of an encoded measurement (share)."""
        raise NotImplementedError

    def decode(self, output: Vec, num_measurements: int) -> R:
        """The aggregate result from the sum of the aggregate shares."""
        raise NotImplementedError

    def eval(self, meas: Vec, joint_rand: Vec, num_shares: int) -> Vec:
        """The circuit on a measurement (share): all zeros iff it accepts (§7.3.2)."""
        wires = self.wire_inputs(meas, joint_rand, num_shares)
        outs = [g.eval_calls(self.field, w) for g, w in zip(self.GADGETS, wires, strict=True)]
        return self.eval_output(meas, joint_rand, num_shares, outs)

    def prove_rand_len(self) -> int:
        """One wire seed per gadget input (§7.3.2)."""
        return sum(g.ARITY for g in self.GADGETS)

    def query_rand_len(self) -> int:
        """One test point per gadget, plus output-reduction coefficients (§7.3.2)."""
        extra = self.EVAL_OUTPUT_LEN if self.EVAL_OUTPUT_LEN > 1 else 0
        return len(self.GADGETS) + extra


def encode_range_checked_int(field: NttField, value: int, max_measurement: int) -> Vec:
    """Bits of ``value`` with a last weight making the weights sum to ``max_measurement``.

    draft §7.4.2 ``encode_range_checked_int``: the first ``bits - 1`` weights are
    powers of two, the last is ``max_measurement - (2^(bits-1) - 1)``.
    """
    if not 0 <= value <= max_measurement:
        raise ValueError("measurement out of range")
    bits = max_measurement.bit_length()
    rest_all_ones = 2 ** (bits - 1) - 1
    if value <= rest_all_ones:
        rest, last = value, 0
    else:
        rest, last = value - (max_measurement - rest_all_ones), 1
    return [(rest >> i) & 1 for i in range(bits - 1)] + [last]


def range_checked_weights(max_measurement: int) -> list[int]:
    """Weights of the range-checked encoding: ``1, 2, ..., 2^(bits-2)``, then the rest (§7.4.2)."""
    bits = max_measurement.bit_length()
    last_weight = max_measurement - (2 ** (bits - 1) - 1)
    return [1 << i for i in range(bits - 1)] + [last_weight]


def decode_range_checked_int(field: NttField, encoded: Sequence[int], max_measurement: int) -> int:
    """The weighted sum of an encoding (or of a share of one: it is linear), §7.4.2."""
    weights = range_checked_weights(max_measurement)
    return field.dot(weights, encoded[: len(weights)])


class CountCircuit(Valid[int, int]):
    """Count (§7.4.1): ``x * x - x = 0``, i.e. the measurement is 0 or 1."""

    JOINT_RAND_LEN = 0
    MEAS_LEN = 1
    OUTPUT_LEN = 1
    EVAL_OUTPUT_LEN = 1

    def __init__(self, field: NttField) -> None:
        self.field = field
        self.GADGETS = [Mul()]
        self.GADGET_CALLS = [1]

    def encode(self, measurement: int) -> Vec:
        """``[measurement]`` (0 or 1; bool accepted)."""
        if measurement not in (0, 1):
            raise ValueError("Count measurement must be 0 or 1")
        return [int(measurement)]

    def wire_inputs(self, meas: Vec, joint_rand: Vec, num_shares: int) -> list[list[Vec]]:
        """``Mul(x, x)``."""
        return [[[meas[0]], [meas[0]]]]

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """``x^2 - x``."""
        return [(gadget_outputs[0][0] - meas[0]) % self.field.MODULUS]

    def truncate(self, meas: Vec) -> Vec:
        """The measurement itself."""
        return list(meas)

    def decode(self, output: Vec, num_measurements: int) -> int:
        """The count."""
        return output[0]


class SumCircuit(Valid[int, int]):
    """Sum (§7.4.2): each of the ``bits`` encoded elements is 0 or 1.

    Parameters
    ----------
    field : NttField
        The field.
    max_measurement : int
        Largest valid measurement (measurements are in ``[0, max_measurement]``).
    """

    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1

    def __init__(self, field: NttField, max_measurement: int) -> None:
        if not 0 < max_measurement < field.MODULUS:
            raise ValueError("max_measurement must be in [1, MODULUS)")
        self.field = field
        self.max_measurement = max_measurement
        self.bits = max_measurement.bit_length()
        self.GADGETS = [PolyEval([0, -1, 1], self.bits)]
        self.GADGET_CALLS = [self.bits]
        self.MEAS_LEN = self.bits
        self.EVAL_OUTPUT_LEN = self.bits

    def encode(self, measurement: int) -> Vec:
        """The range-checked bit encoding."""
        return encode_range_checked_int(self.field, measurement, self.max_measurement)

    def wire_inputs(self, meas: Vec, joint_rand: Vec, num_shares: int) -> list[list[Vec]]:
        """``PolyEval(b)`` for each bit ``b``."""
        return [[list(meas)]]

    def eval_output(
        self, meas: Vec, joint_rand: Vec, num_shares: int, gadget_outputs: list[Vec]
    ) -> Vec:
        """``b^2 - b`` per bit."""
        return list(gadget_outputs[0])

    def truncate(self, meas: Vec) -> Vec:
        """The weighted sum of the bits."""
        return [decode_range_checked_int(self.field, meas, self.max_measurement)]

    def decode(self, output: Vec, num_measurements: int) -> int:
        """The sum."""
        return output[0]


def range_check_wires(
    field: NttField, meas: Vec, joint_rand: Vec, chunk_length: int, calls: int, num_shares: int
) -> list[Vec]:
    """Wires of ``ParallelSum(Mul(), chunk_length)`` checking every element is a bit.

    Call ``i`` takes, for ``j < chunk_length`` and ``x = meas[i*chunk_length + j]``
    (zero past the end), the pair ``(r_i^(j+1) * x, x - 1/num_shares)`` where
    ``r_i = joint_rand[i]`` (§7.4.3 ``SumVec.eval``).

    Returns
    -------
    list of list of int
        ``2 * chunk_length`` rows of ``calls`` values.
    """
    p = field.MODULUS
    shares_inv = field.inv(num_shares)
    padded = list(meas) + [0] * (calls * chunk_length - len(meas))
    r = list(joint_rand[:calls])
    r_power = r
    rows: list[Vec] = []
    for j in range(chunk_length):
        column = padded[j::chunk_length]
        rows.append([rp * x % p for rp, x in zip(r_power, column, strict=True)])
        rows.append([(x - shares_inv) % p for x in column])
        if j + 1 < chunk_length:
            r_power = [rp * ri % p for rp, ri in zip(r_power, r, strict=True)]
    return rows


class _RangeChecked(Valid[M, R]):
    """Shared set-up of the ``ParallelSum(Mul)`` circuits (§7.4.3 to §7.4.5)."""

    def _setup(self, field: NttField, meas_len: int, output_len: int, chunk_length: int) -> None:
        if chunk_length < 1:
            raise ValueError("chunk_length must be positive")
        self.field = field
        self.chunk_length = chunk_length
        calls = (meas_len + chunk_length - 1) // chunk_length
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [calls]
        self.MEAS_LEN = meas_len
        self.OUTPUT_LEN = output_len
        self.JOINT_RAND_LEN = calls

    def wire_inputs(self, meas: Vec, joint_rand: Vec, num_shares: int) -> list[list[Vec]]:
        """The bit check of every encoded element."""
        calls = self.GADGET_CALLS[0]
        return [
            range_check_wires(self.field, meas, joint_rand, self.chunk_length, calls, num_shares)
        ]

    def decode(self, output: Vec, num_measurements: int) -> R:
        """The element-wise sums."""
        return list(output)  # type: ignore[return-value]
