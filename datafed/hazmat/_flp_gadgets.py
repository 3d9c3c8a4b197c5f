"""FLP gadgets (draft-irtf-cfrg-vdaf-20 Appendix A): Mul, PolyEval, ParallelSum.

A gadget is the non-affine sub-circuit of a validity circuit (§7.3.1).  Each one
here is evaluated three ways:

* :meth:`Gadget.eval` on one call's inputs (the draft's ``eval``; used by
  ``decide``);
* :meth:`Gadget.eval_calls` on all calls at once: ``inputs[j][k]`` is wire ``j`` of
  call ``k`` and the result is the output of each call (the prover's and the
  circuit's view, vectorised over calls instead of recording them one by one as
  the draft's ``ProveGadget`` shim of Appendix A.4 does);
* :meth:`Gadget.eval_poly` on the wire polynomials in the Lagrange basis (the
  draft's ``eval_poly``), giving the gadget polynomial on the next power-of-two
  number of roots of unity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datafed.hazmat._field import NttField, Vec, next_power_of_2
from datafed.hazmat._ntt import double_evaluations_rows, inv_ntt, ntt


def wire_poly_len(gadget_calls: int) -> int:
    """Points per wire polynomial: the seed plus one per call, rounded up (§7.3.2)."""
    return next_power_of_2(1 + gadget_calls)


def gadget_poly_len(gadget_degree: int, wire_polynomial_len: int) -> int:
    """Points of the gadget polynomial that the proof carries (§7.3.2)."""
    return gadget_degree * (wire_polynomial_len - 1) + 1


class Gadget:
    """A gadget: ``ARITY`` input wires, arithmetic degree ``DEGREE``."""

    ARITY: int
    DEGREE: int

    def eval(self, field: NttField, inp: Sequence[int]) -> int:
        """The gadget on one call's ``ARITY`` inputs."""
        return self.eval_calls(field, [[x] for x in inp])[0]

    def eval_calls(self, field: NttField, inputs: Sequence[Sequence[int]]) -> Vec:
        """The output of each call; ``inputs[j][k]`` is wire ``j`` of call ``k``."""
        raise NotImplementedError

    def eval_poly(self, field: NttField, wire_polys: Sequence[Sequence[int]]) -> Vec:
        """The gadget on its wire polynomials (Lagrange basis, equal power-of-two length)."""
        raise NotImplementedError


class Mul(Gadget):
    """``Mul(x, y) = x * y`` (Appendix A.1)."""

    ARITY = 2
    DEGREE = 2

    def eval_calls(self, field: NttField, inputs: Sequence[Sequence[int]]) -> Vec:
        """Products of the two wires, per call."""
        return field.vec_mul(inputs[0], inputs[1])

    def eval_poly(self, field: NttField, wire_polys: Sequence[Sequence[int]]) -> Vec:
        """The product polynomial on twice the points (draft ``Lagrange.poly_mul``)."""
        left, right = double_evaluations_rows(field, wire_polys[:2])
        return field.vec_mul(left, right)


class PolyEval(Gadget):
    """``PolyEval(x) = p(x)`` for a fixed polynomial ``p`` (Appendix A.2).

    Parameters
    ----------
    coeffs : sequence of int
        Coefficients of ``p`` in ascending degree (may be negative).
    num_calls : int
        How many times the circuit calls the gadget (fixes the output length).
    """

    ARITY = 1

    def __init__(self, coeffs: Sequence[int], num_calls: int) -> None:
        coeffs = list(coeffs)
        while coeffs and coeffs[-1] == 0:
            coeffs.pop()
        if not coeffs:
            raise ValueError("invalid polynomial: zero length")
        self.coeffs = coeffs
        self.DEGREE = len(coeffs) - 1
        self.n = next_power_of_2(gadget_poly_len(self.DEGREE, wire_poly_len(num_calls)))

    def _horner(self, field: NttField, xs: Sequence[int]) -> Vec:
        p = field.MODULUS
        coeffs = [c % p for c in self.coeffs]
        acc = [coeffs[-1]] * len(xs)
        for c in reversed(coeffs[:-1]):
            acc = [(a * x + c) % p for a, x in zip(acc, xs, strict=True)]
        return acc

    def eval_calls(self, field: NttField, inputs: Sequence[Sequence[int]]) -> Vec:
        """``p`` at each call's input."""
        return self._horner(field, inputs[0])

    def eval_poly(self, field: NttField, wire_polys: Sequence[Sequence[int]]) -> Vec:
        """``p`` composed with the wire polynomial, on ``n`` points."""
        length = len(wire_polys[0])
        if self.n == 2 * length:  # degree 2 (e.g. x^2 - x): the doubled evaluations
            values = double_evaluations_rows(field, wire_polys[:1])[0]
        else:
            values = ntt(field, inv_ntt(field, wire_polys[0], length), self.n)
        return self._horner(field, values)


class ParallelSum(Gadget):
    """Sum of ``count`` calls of a subcircuit on consecutive inputs (Appendix A.3).

    Parameters
    ----------
    subcircuit : Gadget
        The gadget applied to each slice of ``subcircuit.ARITY`` inputs.
    count : int
        Number of slices.
    """

    def __init__(self, subcircuit: Gadget, count: int) -> None:
        if count < 1:
            raise ValueError("ParallelSum count must be positive")
        self.subcircuit = subcircuit
        self.count = count
        self.ARITY = subcircuit.ARITY * count
        self.DEGREE = subcircuit.DEGREE

    def eval_calls(self, field: NttField, inputs: Sequence[Sequence[int]]) -> Vec:
        """Per call, the sum over slices of the subcircuit's output."""
        a, p = self.subcircuit.ARITY, field.MODULUS
        if isinstance(self.subcircuit, Mul):
            arr = np.array(inputs, dtype=object)
            total = (arr[0::2] * arr[1::2]).sum(axis=0) % p
            return [int(x) for x in total]
        parts = [
            self.subcircuit.eval_calls(field, inputs[i * a : (i + 1) * a])
            for i in range(self.count)
        ]
        return [sum(col) % p for col in zip(*parts, strict=True)]

    def eval_poly(self, field: NttField, wire_polys: Sequence[Sequence[int]]) -> Vec:
        """Sum of the subcircuit polynomials, on the next power of two points."""
        a, p = self.subcircuit.ARITY, field.MODULUS
        out_len = next_power_of_2(gadget_poly_len(self.DEGREE, len(wire_polys[0])))
        if isinstance(self.subcircuit, Mul):
            # One batched doubling of every wire, then the sum of pairwise products.
            doubled = np.array(double_evaluations_rows(field, wire_polys), dtype=object)
            total = (doubled[0::2] * doubled[1::2]).sum(axis=0) % p
            return [int(x) for x in total]
        acc = [0] * out_len
        for i in range(self.count):
            part = self.subcircuit.eval_poly(field, wire_polys[i * a : (i + 1) * a])
            acc = [(x + y) % p for x, y in zip(acc, part, strict=True)]
        return acc
