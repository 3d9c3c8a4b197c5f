"""The FLP's query and decision over many reports at once (draft-irtf-cfrg-vdaf-20 §7.3).

:func:`query_columns` and :func:`decide_columns` compute exactly what
:meth:`FlpBBCGGI19.query` and :meth:`FlpBBCGGI19.decide` compute for one report, for
``N`` reports whose vectors are columns (:mod:`datafed.hazmat._field_cols`): every
arithmetic step runs once over all reports. The validity circuits' own
``wire_inputs``, ``eval_output`` and the Lagrange extension serve as they are, with rows
in place of integers; the Lagrange basis at the test points is a DFT of their powers
over all reports (:func:`~datafed.hazmat._lagrange.lagrange_columns`). The range-check
circuits (SumVec, Histogram, MultihotCountVec) take a shorter path
(:mod:`datafed.hazmat._flp_range`).

Two steps of the scalar query cannot take rows as they are and are written here: the
test that ``t`` is no wire root of unity (a per-report flag instead of an exception:
such a report is rejected, the others go on), and evaluating a gadget on rows in
``decide`` (a ``ParallelSum`` sums its subcircuit over slices).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from datafed.hazmat._field_cols import Cols, Mask, Words, column
from datafed.hazmat._flp import FlpBBCGGI19, reduce_output, split_proof
from datafed.hazmat._flp_gadgets import Gadget, ParallelSum
from datafed.hazmat._flp_range import is_range_checked, query_range_checked
from datafed.hazmat._lagrange import lagrange_columns


def _pow2k(x: Any, k: int, mod: int) -> Any:
    for _ in range(k):
        x = x * x % mod
    return x


def query_columns(
    flp: FlpBBCGGI19[Any, Any],
    meas: Sequence[Any],
    proof: Sequence[Any],
    query_rand: list[Any],
    joint_rand: list[Any],
    num_shares: int,
    n: int,
    words: tuple[Words, Words, Words] | None = None,
) -> tuple[list[Any], Mask]:
    """Each report's verifier share (§7.3.4), as rows; and which reports may go on.

    Parameters
    ----------
    flp : FlpBBCGGI19
        The proof system.
    meas, proof, query_rand, joint_rand : list of rows
        ``MEAS_LEN``, ``PROOF_LEN``, ``QUERY_RAND_LEN``, ``JOINT_RAND_LEN`` rows of ``n``.
    num_shares : int
        Number of shares the measurements were split into.
    n : int
        Number of reports.
    words : tuple of numpy.ndarray, optional
        Field128 only: the ``uint64`` words of ``meas``, ``proof`` and ``joint_rand``
        (``(L, n, 2)``, :func:`~datafed.hazmat._field_cols.decode_words`), which the
        range-check query reads instead of converting the rows.

    Returns
    -------
    tuple
        ``(verifier, ok)``: ``VERIFIER_LEN`` rows, and ``False`` for a report whose
        test point is a root of unity of a wire polynomial (the scalar query raises).
    """
    if is_range_checked(flp):
        return query_range_checked(flp, meas, proof, query_rand, joint_rand, num_shares, n, words)
    valid, field, mod = flp.valid, flp.field, flp.field.MODULUS
    meas, proof = list(meas), list(proof)
    wires = valid.wire_inputs(meas, joint_rand, num_shares)
    layout = flp.layout
    seeds_and_polys, outputs = split_proof(field, layout, proof)
    out = valid.eval_output(meas, joint_rand, num_shares, outputs)
    v, points = reduce_output(field, valid.EVAL_OUTPUT_LEN, query_rand, out)
    verifier = [column(v, n)]
    ok = np.ones(n, dtype=bool)
    for (_, calls, p), (seeds, poly), inputs, t in zip(
        layout, seeds_and_polys, wires, points, strict=True
    ):
        ok &= np.asarray(_pow2k(t, p.bit_length() - 1, mod) != 1, dtype=bool)
        c = list(lagrange_columns(field, p, column(t, n)))
        head, tail = c[0], c[1 : calls + 1]
        for seed, row in zip(seeds, inputs, strict=True):
            acc = head * seed + sum(map(operator.mul, tail, row))
            verifier.append(column(acc % mod, n))
        g = lagrange_columns(field, len(poly), column(t, n))
        verifier.append(column(sum(map(operator.mul, g, poly)) % mod, n))
    return verifier, ok


def gadget_columns(field: Any, g: Gadget, inputs: list[Any]) -> Any:
    """One call of gadget ``g`` per report: ``ARITY`` rows in, one row out."""
    if isinstance(g, ParallelSum):
        a, total = g.subcircuit.ARITY, 0
        for i in range(g.count):
            total = total + gadget_columns(field, g.subcircuit, inputs[i * a : (i + 1) * a])
        return total % field.MODULUS
    return g.eval_calls(field, [[x] for x in inputs])[0]


def decide_columns(flp: FlpBBCGGI19[Any, Any], verifier: list[Any], n: int) -> Mask:
    """Whether each report's summed verifier accepts (§7.3.5); rows in, flags out."""
    field = flp.field
    ok = np.asarray(column(verifier[0], n) == 0, dtype=bool)
    offset = 1
    for g in flp.valid.GADGETS:
        checks = verifier[offset : offset + g.ARITY]
        expected = verifier[offset + g.ARITY]
        offset += g.ARITY + 1
        ok &= np.asarray(column(gadget_columns(field, g, checks), n) == expected, dtype=bool)
    return ok


def sum_rows(field: Any, shares: list[list[Any]]) -> list[Any]:
    """Element-wise sum of several aggregators' rows, reduced."""
    p = field.MODULUS
    return [sum(parts) % p for parts in zip(*shares, strict=True)]


def rows_of(cols: Cols) -> list[Any]:
    """The rows of an ``(L, N)`` array as a list (what the circuits' code iterates)."""
    return list(cols)


__all__ = [
    "Cols",
    "decide_columns",
    "gadget_columns",
    "query_columns",
    "rows_of",
    "sum_rows",
]
