"""The FLP query of the range-check circuits over many reports (draft-irtf-cfrg-vdaf-20 §7.3.4).

SumVec, Histogram and MultihotCountVec (§7.4.3 to §7.4.5) have one gadget,
``ParallelSum(Mul(), c)``, called ``K`` times on the wires of
:func:`~datafed.hazmat._flp_circuits.range_check_wires`: for call ``i`` and ``j < c``,
with ``x = meas[i*c + j]`` (zero past the end) and ``r_i = joint_rand[i]``, the pair
``(r_i^(j+1) * x, x - 1/num_shares)``. :func:`query_range_checked` computes exactly what
:meth:`FlpBBCGGI19.query` computes for them, for ``N`` reports in columns
(:mod:`datafed.hazmat._flp_batch` dispatches here), in fewer big-integer operations:

* the Lagrange basis at the test point ``t`` (wire polynomials: ``n`` nodes; gadget
  polynomial: ``2n``) is a DFT of the powers of ``t``
  (:func:`~datafed.hazmat._lagrange.lagrange_columns_scaled`): no inversion, no
  per-report coefficient loop, one numpy operation per stage for all reports;
* a wire polynomial at ``t`` is never built from its wire values: the Lagrange
  coefficient is folded into the powers of ``r_i`` (``L_(i+1)(t) * r_i^(j+1)``, one
  product chain per call) and the constant ``-1/num_shares`` into one term
  (``-h * sum_i L_(i+1)(t)``);
* sums of products are accumulated as unreduced Python integers and reduced once
  (a reduction costs about two products);
* the gadget polynomial's value extending it to a power of two is one inner product
  with the cached interpolation row, folded into the evaluation at ``t``.

``tests/unit/hazmat/test_flp_range.py`` holds it equal to the scalar query on valid
and invalid shares of every range-check circuit, and at test points that are roots of
unity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datafed.hazmat._field_cols import Cols, Mask, Words, column
from datafed.hazmat._flp import FlpBBCGGI19
from datafed.hazmat._flp_circuits import _RangeChecked
from datafed.hazmat._flp_gadgets import Mul, ParallelSum
from datafed.hazmat._flp_range_limbs import eval_output_limbs, query_limbs
from datafed.hazmat._lagrange import _extension_matrix, lagrange_columns_scaled, powers_columns
from datafed.hazmat._limbs128 import (
    MAX_TERMS,
    words_of_ints,
)
from datafed.hazmat._limbs128 import P as LIMB_P


def is_range_checked(flp: FlpBBCGGI19[Any, Any]) -> bool:
    """Whether :func:`query_range_checked` applies to ``flp`` (one ``ParallelSum(Mul)``)."""
    valid = flp.valid
    if not isinstance(valid, _RangeChecked) or len(valid.GADGETS) != 1:
        return False
    g = valid.GADGETS[0]
    return (
        isinstance(g, ParallelSum)
        and isinstance(g.subcircuit, Mul)
        and g.count == valid.chunk_length
        and type(valid).wire_inputs is _RangeChecked.wire_inputs
    )


def _rows(rows: Any, n: int) -> Cols:
    out = np.empty((len(rows), n), dtype=object)
    for i, r in enumerate(rows):
        out[i] = r
    return out


def query_range_checked(
    flp: FlpBBCGGI19[Any, Any],
    meas: Sequence[Any],
    proof: Sequence[Any],
    query_rand: list[Any],
    joint_rand: list[Any],
    num_shares: int,
    n: int,
    words: tuple[Words, Words, Words] | None = None,
) -> tuple[list[Any], Mask]:
    """:func:`~datafed.hazmat._flp_batch.query_columns` for a range-check circuit.

    Parameters and result as there: rows of ``n`` reports in, ``VERIFIER_LEN`` rows
    and the flags of reports whose test point is a wire root of unity out. ``words``
    optionally holds the ``uint64`` words (:func:`~datafed.hazmat._field_cols.decode_words`)
    of ``meas``, ``proof`` and ``joint_rand``: Field128 wires are then computed on limbs
    (:func:`_wires_limbs`) without converting those rows.

    Why long: one pass over the query's steps, each a few whole-array operations;
    split, the intermediate arrays would only travel between functions.
    """
    valid, field = flp.valid, flp.field
    p = field.MODULUS
    ((_, calls, wlen),) = flp.layout
    if not is_range_checked(flp) or not isinstance(valid, _RangeChecked):
        raise ValueError("not a range-check circuit (one ParallelSum(Mul) gadget)")
    c = valid.chunk_length
    glen = 2 * (wlen - 1) + 1
    t = column(query_rand[-1], n)
    if p == LIMB_P and max(calls + 2, glen) <= MAX_TERMS:
        if words is None:
            words = (_words(meas, n), _words(proof, n), _words(joint_rand[:calls], n))
        wires, gt, ok, x = query_limbs(field, words, t, c, calls, wlen, num_shares)
        # The gadget's outputs (its values on the wires' nodes): the only proof rows read.
        outputs: list[Any] = [column(proof[2 * c + 2 * k], n) for k in range(1, calls + 1)]
        out = eval_output_limbs(valid, x, outputs, num_shares)
        if out is None:
            out = valid.eval_output(list(meas), joint_rand, num_shares, [outputs])
        return _verifier(field, valid, query_rand, out, wires, gt, n), ok
    rows = list(meas)  # Python integers (from LazyRows: decoded here)
    pf = _rows(proof, n)
    gpoly = pf[2 * c : 2 * c + glen]
    wires, gt, ok = _query_objects(field, rows, pf, joint_rand, t, c, calls, wlen, num_shares)
    step = 2  # the gadget polynomial's node 2k is the wires' node k
    outputs = [gpoly[k * step] for k in range(1, calls + 1)]
    out = valid.eval_output(rows, joint_rand, num_shares, [outputs])
    return _verifier(field, valid, query_rand, out, wires, gt, n), ok


def _verifier(
    field: Any,
    valid: Any,
    query_rand: list[Any],
    out: list[Any],
    wires: list[Any],
    gt: Cols,
    n: int,
) -> list[Any]:
    """The circuit's output (randomly combined when it has several), the wires, the gadget."""
    k = valid.EVAL_OUTPUT_LEN
    v = field.dot(query_rand[:k], out) if k > 1 else out[0]
    return [column(v, n), *wires, gt]


def _query_objects(
    field: Any,
    meas: list[Any],
    pf: Cols,
    joint_rand: list[Any],
    t: Cols,
    c: int,
    calls: int,
    wlen: int,
    num_shares: int,
) -> tuple[list[Any], Cols, Mask]:
    """The wires and the gadget polynomial at ``t`` on Python integers; the flags."""
    p, n = field.MODULUS, len(t)
    flat = np.zeros((calls * c, n), dtype=object)
    flat[: len(meas)] = _rows(meas, n)
    x: Cols = flat.reshape(calls, c, n)
    glen = 2 * (wlen - 1) + 1
    seeds, gpoly = pf[: 2 * c], pf[2 * c : 2 * c + glen]
    r = _rows(joint_rand[:calls], n)
    # Powers of t over wlen up to t^wlen / wlen; the wires' Lagrange basis at t.
    low = powers_columns(field, t, wlen + 1, field.inv(wlen))
    t_w = low[wlen] * wlen % p
    ok = np.asarray(t_w != 1, dtype=bool)
    lag = lagrange_columns_scaled(field, low[:wlen]) % p  # L_k(t)
    wires = _wires_objects(field, x, seeds, r, lag, c, calls, num_shares)
    return wires, _gadget_at(field, gpoly, low, lag, t_w), ok


def _words(rows: Sequence[Any], n: int) -> Words:
    lo, hi = words_of_ints(_rows(rows, n))
    return np.stack([lo, hi], axis=-1)


def _wires_objects(
    field: Any, x: Cols, seeds: Cols, r: Cols, lag: Cols, c: int, calls: int, num_shares: int
) -> list[Any]:
    """The ``2c`` wire values at ``t`` on Python integers (Field64, or very long calls)."""
    p = field.MODULUS
    coef, head = lag[1 : calls + 1], lag[0]
    chain = coef * r % p  # L_(i+1)(t) * r_i, then times r_i again for each j
    h_sum = field.inv(num_shares) * coef.sum(axis=0)
    odd = np.einsum("ikn,ikn->kn", np.broadcast_to(coef[:, None, :], x.shape), x) - h_sum
    wires = []
    for j in range(c):
        even = np.einsum("in,in->n", chain, x[:, j])
        if j + 1 < c:
            chain = chain * r % p  # reduced: with long chunks the powers would grow
        wires.append((even + head * seeds[2 * j]) % p)
        wires.append((odd[j] + head * seeds[2 * j + 1]) % p)
    return wires


def _gadget_at(field: Any, gpoly: Cols, low: Cols, lag: Cols, t_w: Cols) -> Cols:
    """The gadget polynomial at ``t``, reduced, from its ``2 * wlen - 1`` values.

    ``low`` holds ``t^e / wlen``, ``lag`` the wires' Lagrange basis at ``t``, ``t_w``
    is ``t^wlen``. The gadget polynomial's ``2 * wlen`` nodes are the wires' nodes ``H``
    (even indices) and the coset ``z * H`` (odd indices, ``z`` a primitive
    ``2 * wlen``-th root), where ``x^wlen`` is 1 and -1: ``G(t) = (1 + t^wlen) / 2 *
    A(t) + (1 - t^wlen) / 2 * B(t)``, ``A`` and ``B`` interpolating the even and the odd
    values over ``H``, ``B`` at ``t / z``. One more DFT of ``wlen`` points instead of
    one of ``2 * wlen``; the missing last odd value is the interpolation row of
    :func:`~datafed.hazmat._lagrange.extend_values_to_power_of_2` times the others.
    """
    p, wlen = field.MODULUS, len(lag)
    glen = 2 * wlen - 1
    ext = np.empty((glen, 1), dtype=object)
    ext[:, 0] = _extension_matrix(field, glen, 2 * wlen)[0]
    last = (ext * gpoly).sum(axis=0) % p
    roots = field.nth_root_powers(2 * wlen)
    shift = np.empty((wlen, 1), dtype=object)
    shift[:, 0] = [roots[-e % (2 * wlen)] for e in range(wlen)]  # z^-e
    lag_b = lagrange_columns_scaled(field, low[:wlen] * shift)  # L_k(t / z), unreduced
    a = np.einsum("kn,kn->n", lag, gpoly[0::2]) % p
    b = (np.einsum("kn,kn->n", lag_b[:-1], gpoly[1::2]) + lag_b[-1] * last) % p
    out: Cols = ((1 + t_w) * a + (1 - t_w) * b) * field.inv(2) % p
    return out
