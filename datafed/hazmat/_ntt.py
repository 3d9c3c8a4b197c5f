"""NTT and evaluation doubling (draft-irtf-cfrg-vdaf-20 §6.1.2, §6.1.3.2).

Polynomials of the FLP are kept in the Lagrange basis over the ``n``-th roots of
unity (§6.1.3.2): ``v[i] = p(W_n^i)``.  The functions here give the same results
as the draft's ``Field.ntt``, ``Field.inv_ntt`` and class ``Lagrange``; how they
get there differs where it is faster:

* the NTT is an iterative radix-2 Cooley-Tukey transform.  One short row runs as
  list comprehensions over strided slices; a batch of rows (the wire polynomials
  of a ``ParallelSum`` gadget) runs stage by stage on a 2-D numpy ``object``
  array, one numpy operation per stage for all rows;
* ``double_evaluations`` of up to 8 points multiplies by a cached matrix.

Lagrange-basis evaluation and extension are in :mod:`datafed.hazmat._lagrange`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from datafed.hazmat._field import NttField, Vec, log2_exact

_BATCH_MIN = 64  # below this many elements in all rows, plain lists beat numpy dispatch

_bitrev_cache: dict[int, list[int]] = {}
_inv_powers_cache: dict[tuple[str, int], Vec] = {}
_coset_cache: dict[tuple[str, int], list[Vec]] = {}
_SMALL_N = 8  # up to this many points, double_evaluations uses a cached matrix


def _bitrev(n: int) -> list[int]:
    perm = _bitrev_cache.get(n)
    if perm is None:
        bits = log2_exact(n)
        perm = [int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(n)]
        _bitrev_cache[n] = perm
    return perm


def _inv_root_powers(field: NttField, n: int) -> Vec:
    key = (field.name, n)
    cached = _inv_powers_cache.get(key)
    if cached is None:
        fwd = field.nth_root_powers(n)
        cached = [fwd[-i % n] for i in range(n)]
        _inv_powers_cache[key] = cached
    return cached


def _dft_list(a: list[int], powers: Vec, p: int) -> Vec:
    """Radix-2 DIT transform of one row; ``powers`` are the ``n`` root powers."""
    n = len(a)
    perm = _bitrev(n)
    a = [a[i] for i in perm]
    m = 1
    while m < n:
        step = 2 * m
        tw = powers[: n // 2 : n // step]
        if m <= n // step:  # few twiddles: one slice per twiddle across all blocks
            for j in range(m):
                w = tw[j]
                lo, hi = a[j::step], a[j + m :: step]
                t = hi if m == 1 else [h * w % p for h in hi]  # stage 1: twiddle 1
                a[j::step] = [x + y for x, y in zip(lo, t, strict=True)]
                a[j + m :: step] = [x - y for x, y in zip(lo, t, strict=True)]
        else:  # few blocks: one slice per block with the twiddle vector
            for k in range(0, n, step):
                lo = a[k : k + m]
                t = [h * w % p for h, w in zip(a[k + m : k + step], tw, strict=True)]
                a[k : k + m] = [x + y for x, y in zip(lo, t, strict=True)]
                a[k + m : k + step] = [x - y for x, y in zip(lo, t, strict=True)]
        m = step
    # Sums and differences were left unreduced (Python ints): reduce once.
    return [x % p for x in a]


def _dft_rows(rows: Any, powers: Vec, p: int) -> Any:
    """The same transform on a 2-D ``object`` array, vectorised over rows and blocks."""
    count, n = rows.shape
    a = rows[:, _bitrev(n)]
    m = 1
    while m < n:
        step = 2 * m
        tw = np.empty(m, dtype=object)
        tw[:] = powers[: n // 2 : n // step]
        view = a.reshape(count, n // step, 2, m)
        lo = view[:, :, 0, :]
        # The first stage's only twiddle is 1 (inputs are reduced): no product needed.
        t = view[:, :, 1, :] if m == 1 else view[:, :, 1, :] * tw % p
        a = np.stack((lo + t, lo - t), axis=2).reshape(count, n)
        m = step
    return a % p


def _transform(
    field: NttField, rows: Sequence[Sequence[int]], powers: Vec, scale: Vec | None
) -> list[Vec]:
    p, n = field.MODULUS, len(powers)
    if len(rows) * n < _BATCH_MIN:
        out = []
        for row in rows:
            padded = [*row, *([0] * (n - len(row)))]
            if scale is not None:
                padded = [x * s % p for x, s in zip(padded, scale, strict=True)]
            out.append(_dft_list(padded, powers, p))
        return out
    arr = np.zeros((len(rows), n), dtype=object)
    for i, row in enumerate(rows):
        arr[i, : len(row)] = row
    if scale is not None:
        sc = np.empty(n, dtype=object)
        sc[:] = scale
        arr = arr * sc % p
    result: list[Vec] = _dft_rows(arr, powers, p).tolist()
    return result


def ntt_rows(
    field: NttField, rows: Sequence[Sequence[int]], n: int, set_s: bool = False
) -> list[Vec]:
    """Evaluate polynomials given by coefficients at the ``n``-th roots of unity.

    Parameters
    ----------
    field : NttField
        The field.
    rows : sequence of sequence of int
        Coefficients (ascending degree), each row at most ``n`` long.
    n : int
        Number of evaluation points, a power of two.
    set_s : bool, optional
        Evaluate at ``s * W_n^i`` with ``s = W_2n`` instead (draft §6.1.2).

    Returns
    -------
    list of list of int
        ``n`` evaluations per row.
    """
    if any(len(r) > n for r in rows):
        raise ValueError("polynomial longer than the transform")
    scale = field.nth_root_powers(2 * n)[:n] if set_s else None
    return _transform(field, rows, field.nth_root_powers(n), scale)


def inv_ntt_rows(field: NttField, rows: Sequence[Sequence[int]], n: int) -> list[Vec]:
    """Coefficients of the polynomials with the given evaluations (draft §6.1.2).

    Parameters
    ----------
    field : NttField
        The field.
    rows : sequence of sequence of int
        ``n`` evaluations at the ``n``-th roots of unity per row.
    n : int
        A power of two.

    Returns
    -------
    list of list of int
        ``n`` coefficients per row.
    """
    if any(len(r) != n for r in rows):
        raise ValueError("inv_ntt needs exactly n evaluations")
    p = field.MODULUS
    n_inv = field.inv(n)
    out = _transform(field, rows, _inv_root_powers(field, n), None)
    return [[x * n_inv % p for x in row] for row in out]


def ntt(field: NttField, coeffs: Sequence[int], n: int, set_s: bool = False) -> Vec:
    """One-row :func:`ntt_rows` (the draft's ``Field.ntt``)."""
    return ntt_rows(field, [coeffs], n, set_s)[0]


def inv_ntt(field: NttField, values: Sequence[int], n: int) -> Vec:
    """One-row :func:`inv_ntt_rows` (the draft's ``Field.inv_ntt``)."""
    return inv_ntt_rows(field, [values], n)[0]


def double_evaluations_rows(field: NttField, rows: Sequence[Sequence[int]]) -> list[Vec]:
    """``2n`` evaluations from ``n`` per row (draft §6.1.3.2 ``double_evaluations``).

    The interpolant of each row is evaluated on the coset ``s * W_n^i``; the result
    interleaves the given (even) and the new (odd) points, which are the
    ``2n``-th roots of unity in order. The rows all have the same power-of-two length.
    """
    if not rows:
        return []
    n = len(rows[0])
    log2_exact(n)
    p = field.MODULUS
    if n <= _SMALL_N:
        # A few points: one small matrix (cached) beats two transforms' bookkeeping.
        matrix = _coset_matrix(field, n)
        odd = [[sum(map(operator.mul, m, row)) % p for m in matrix] for row in rows]
    else:
        # inv_ntt then ntt(set_s): fold 1/n and s^j into one scaling of the coefficients.
        n_inv = field.inv(n)
        scale = [s * n_inv % p for s in field.nth_root_powers(2 * n)[:n]]
        coeffs = _transform(field, rows, _inv_root_powers(field, n), None)
        odd = _transform(field, coeffs, field.nth_root_powers(n), scale)
    out = []
    for even_row, odd_row in zip(rows, odd, strict=True):
        both = [0] * (2 * n)
        both[0::2] = even_row
        both[1::2] = odd_row
        out.append(both)
    return out


def _coset_matrix(field: NttField, n: int) -> list[Vec]:
    """``M`` with ``M @ values = ntt(inv_ntt(values), n, set_s=True)``, cached per ``n``."""
    key = (field.name, n)
    matrix = _coset_cache.get(key)
    if matrix is None:
        # Column i is the image of the i-th unit vector.
        columns = [
            ntt_rows(field, inv_ntt_rows(field, [[int(i == j) for j in range(n)]], n), n, True)[0]
            for i in range(n)
        ]
        matrix = [[columns[i][k] for i in range(n)] for k in range(n)]
        _coset_cache[key] = matrix
    return matrix
