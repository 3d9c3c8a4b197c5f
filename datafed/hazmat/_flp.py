"""The fully linear proof of BBCGGI19 as specified in draft-irtf-cfrg-vdaf-20 §7.3.

:class:`FlpBBCGGI19` turns a validity circuit (:mod:`._flp_circuits`) into

* ``prove`` (§7.3.3): per gadget, the wire seeds (from the prover randomness)
  and the gadget polynomial evaluated on the wire polynomials;
* ``query`` (§7.3.4): run on a share of the measurement and of the proof, it
  gives a share of the verifier: the (randomly reduced) circuit output and, per
  gadget, the wire polynomials and the gadget polynomial at a random point ``t``;
* ``decide`` (§7.3.5): on the summed verifier, the circuit output must be zero
  and each gadget, applied to the wire values at ``t``, must match the gadget
  polynomial at ``t``.

Everything is vectorised over gadget calls (see :mod:`._flp_gadgets`).  Lengths
come from the circuit as in the draft's ``Flp`` parameters (§7.1, §7.3).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from datafed.hazmat._field import Vec, next_power_of_2
from datafed.hazmat._flp_circuits import Valid
from datafed.hazmat._flp_gadgets import Gadget, gadget_poly_len, wire_poly_len
from datafed.hazmat._lagrange import extend_values_to_power_of_2, lagrange_coeffs
from datafed.hazmat.errors import InvalidShare

M = TypeVar("M")
R = TypeVar("R")


def split_proof(
    field: Any, layout: Sequence[tuple[Gadget, int, int]], proof: Sequence[Any]
) -> tuple[list[tuple[Sequence[Any], Vec]], list[Vec]]:
    """A proof (share) per gadget: its wire seeds and gadget polynomial, and the calls' outputs.

    The entries may be field elements or rows of them (the batched query's columns).
    """
    seeds_and_polys, outputs, offset = [], [], 0
    for g, calls, p in layout:
        seeds = proof[offset : offset + g.ARITY]
        offset += g.ARITY
        g_len = gadget_poly_len(g.DEGREE, p)
        poly = extend_values_to_power_of_2(
            field, proof[offset : offset + g_len], next_power_of_2(g_len)
        )
        offset += g_len
        # The gadget polynomial's point W_size^(k*step) is W_p^k: call k's output.
        step = len(poly) // p
        outputs.append([poly[k * step] for k in range(1, calls + 1)])
        seeds_and_polys.append((seeds, poly))
    return seeds_and_polys, outputs


def reduce_output(field: Any, k: int, query_rand: Sequence[Any], out: Sequence[Any]) -> Any:
    """``(v, points)``: the circuit's outputs reduced, and the gadgets' test points.

    ``k`` outputs are reduced by the first ``k`` query randomness elements (one output is
    itself); the test points follow them.
    """
    if k > 1:
        return field.dot(query_rand[:k], out), query_rand[k:]
    return out[0], query_rand


class FlpBBCGGI19(Generic[M, R]):
    """The FLP of draft §7.3 over one validity circuit.

    Parameters
    ----------
    valid : Valid
        The validity circuit.
    """

    def __init__(self, valid: Valid[M, R]) -> None:
        self.valid = valid
        self.field = valid.field
        self.PROVE_RAND_LEN = valid.prove_rand_len()
        self.QUERY_RAND_LEN = valid.query_rand_len()
        self.JOINT_RAND_LEN = valid.JOINT_RAND_LEN
        self.MEAS_LEN = valid.MEAS_LEN
        self.OUTPUT_LEN = valid.OUTPUT_LEN
        self._layout = [
            (g, calls, wire_poly_len(calls))
            for g, calls in zip(valid.GADGETS, valid.GADGET_CALLS, strict=True)
        ]
        self.PROOF_LEN = sum(g.ARITY + gadget_poly_len(g.DEGREE, p) for g, _, p in self._layout)
        self.VERIFIER_LEN = 1 + sum(g.ARITY + 1 for g in valid.GADGETS)

    @property
    def layout(self) -> list[tuple[Gadget, int, int]]:
        """Per gadget: the gadget, its number of calls, its wire polynomials' length."""
        return list(self._layout)

    # -- encoding (§7.1.1) ---------------------------------------------------------
    def encode(self, measurement: M) -> Vec:
        """The encoded measurement (``MEAS_LEN`` elements)."""
        return self.valid.encode(measurement)

    def truncate(self, meas: Vec) -> Vec:
        """The aggregatable output (``OUTPUT_LEN`` elements)."""
        return self.valid.truncate(meas)

    def decode(self, output: Vec, num_measurements: int) -> R:
        """The aggregate result."""
        return self.valid.decode(output, num_measurements)

    # -- the proof system ------------------------------------------------------------
    def prove(self, meas: Vec, prove_rand: Vec, joint_rand: Vec) -> Vec:
        """Generate a proof of validity of ``meas`` (§7.3.3).

        Parameters
        ----------
        meas : list of int
            The encoded measurement.
        prove_rand : list of int
            ``PROVE_RAND_LEN`` elements: the wire seeds.
        joint_rand : list of int
            ``JOINT_RAND_LEN`` elements.

        Returns
        -------
        list of int
            ``PROOF_LEN`` elements.
        """
        self._check(meas, self.MEAS_LEN)
        self._check(prove_rand, self.PROVE_RAND_LEN)
        self._check(joint_rand, self.JOINT_RAND_LEN)
        wires = self.valid.wire_inputs(meas, joint_rand, 1)
        proof: Vec = []
        offset = 0
        for (g, calls, p), inputs in zip(self._layout, wires, strict=True):
            seeds = prove_rand[offset : offset + g.ARITY]
            offset += g.ARITY
            # Wire j's polynomial takes the seed at W_p^0 and call k's input at W_p^k.
            pad = [0] * (p - 1 - calls)
            polys = [[s, *row, *pad] for s, row in zip(seeds, inputs, strict=True)]
            proof += seeds
            proof += g.eval_poly(self.field, polys)[: gadget_poly_len(g.DEGREE, p)]
        return proof

    def query(
        self, meas: Vec, proof: Vec, query_rand: Vec, joint_rand: Vec, num_shares: int
    ) -> Vec:
        """A share of the verifier from a share of ``meas`` and of ``proof`` (§7.3.4).

        Parameters
        ----------
        meas, proof : list of int
            Shares of the encoded measurement and of the proof.
        query_rand : list of int
            ``QUERY_RAND_LEN`` elements (reduction weights, then one point per gadget).
        joint_rand : list of int
            ``JOINT_RAND_LEN`` elements.
        num_shares : int
            Number of shares the measurement was split into.

        Returns
        -------
        list of int
            ``VERIFIER_LEN`` elements.

        Raises
        ------
        InvalidShare
            If a test point is a root of unity used by the wire polynomials (the
            verifier would leak a wire value; §7.3.4 aborts).
        """
        self._check(meas, self.MEAS_LEN)
        self._check(proof, self.PROOF_LEN)
        self._check(query_rand, self.QUERY_RAND_LEN)
        self._check(joint_rand, self.JOINT_RAND_LEN)
        field, mod = self.field, self.field.MODULUS
        wires = self.valid.wire_inputs(meas, joint_rand, num_shares)
        seeds_and_polys, outputs = split_proof(field, self._layout, proof)
        out = self.valid.eval_output(meas, joint_rand, num_shares, outputs)
        v, points = reduce_output(field, self.valid.EVAL_OUTPUT_LEN, query_rand, out)
        verifier = [v]
        for (_, calls, p), (seeds, poly), inputs, t in zip(
            self._layout, seeds_and_polys, wires, points, strict=True
        ):
            if pow(t, p, mod) == 1:
                raise InvalidShare
            c = lagrange_coeffs(field, p, t)
            # Wire polynomial = [seed, call inputs..., zero padding]: skip the zeros.
            head, tail = c[0], c[1 : calls + 1]
            for seed, row in zip(seeds, inputs, strict=True):
                acc = head * seed + sum(map(operator.mul, tail, row))
                verifier.append(acc % mod)
            verifier.append(field.dot(lagrange_coeffs(field, len(poly), t), poly))
        return verifier

    def decide(self, verifier: Vec) -> bool:
        """Whether the summed verifier accepts (§7.3.5).

        Parameters
        ----------
        verifier : list of int
            ``VERIFIER_LEN`` elements.

        Returns
        -------
        bool
            ``True`` iff the circuit output is zero and every gadget test passes.
        """
        self._check(verifier, self.VERIFIER_LEN)
        if verifier[0] != 0:
            return False
        offset = 1
        for g in self.valid.GADGETS:
            wire_checks = verifier[offset : offset + g.ARITY]
            gadget_check = verifier[offset + g.ARITY]
            offset += g.ARITY + 1
            if g.eval(self.field, wire_checks) != gadget_check:
                return False
        return True

    @staticmethod
    def _check(vec: Sequence[int], length: int) -> None:
        if len(vec) != length:
            raise ValueError(f"expected {length} field elements, got {len(vec)}")
