"""Lagrange-basis evaluation and extension (draft-irtf-cfrg-vdaf-20 §6.1.3.2).

Polynomials of the FLP are kept as their values on the ``n``-th roots of unity.
The results equal the draft's ``Lagrange.poly_eval_batched`` and
``extend_values_to_power_of_2``; the computation differs:

* evaluation at ``t`` goes through the Lagrange coefficients
  ``c_i(t) = W^i * prod_{j != i}(W^j - t) * (-1)^(n-1) / n`` built from prefix and
  suffix products (the closed form of the draft's loop, no inversion, valid also
  when ``t`` is a node), then one inner product per polynomial;
* extension multiplies by a cached interpolation matrix: the draft's barycentric
  loop depends only on the field and the two lengths;
* over a batch, the basis at one test point per report is a DFT of the points' powers
  (:func:`lagrange_columns`): ``L_k(t) = (1/n) sum_e t^e W^(-k*e)``, one numpy
  operation per radix-2 stage for every report, no inversion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from datafed.hazmat._field import NttField, Vec, log2_exact
from datafed.hazmat._field_np import P64, add64, mul64, sub64

_extend_cache: dict[tuple[str, int, int], list[Vec]] = {}


def lagrange_coeffs(field: NttField, n: int, t: int) -> Vec:
    """``c`` with ``p(t) = sum_i c[i] * v[i]`` for any ``v`` in the Lagrange basis.

    The closed form of the draft's ``poly_eval_batched`` loop (§6.1.3.2):
    ``c_i = W^i * prod_{j != i} (W^j - t) * (-1)^(n-1) / n``, from prefix and suffix
    products (correct also when ``t`` is itself a root of unity).

    Parameters
    ----------
    field : NttField
        The field.
    n : int
        Number of evaluation points, a power of two.
    t : int
        The evaluation point.

    Returns
    -------
    list of int
        ``n`` coefficients.
    """
    p = field.MODULUS
    nodes = field.nth_root_powers(n)
    diffs = [(w - t) % p for w in nodes]
    prefix = [1] * (n + 1)
    for i in range(n):
        prefix[i + 1] = prefix[i] * diffs[i] % p
    suffix = [1] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] * diffs[i] % p
    factor = (-1) ** (n - 1) * field.inv(n) % p
    return [nodes[i] * prefix[i] % p * suffix[i + 1] % p * factor % p for i in range(n)]


def poly_eval_batched(field: NttField, polys: Sequence[Sequence[int]], t: int) -> Vec:
    """``p(t)`` for each Lagrange-basis polynomial ``p`` of ``polys`` (draft §6.1.3.2).

    The polynomials all have the same power-of-two length ``n``.
    """
    n = len(polys[0])
    if any(len(q) != n for q in polys):
        raise ValueError("polynomials must have the same length")
    c = lagrange_coeffs(field, n, t)
    return [field.dot(c, q) for q in polys]


def _extension_matrix(field: NttField, m: int, n: int) -> list[Vec]:
    key = (field.name, m, n)
    rows = _extend_cache.get(key)
    if rows is None:
        p = field.MODULUS
        x = field.nth_root_powers(n)
        # Barycentric weights of the first m nodes, then L_i(x_k) for each new node k.
        weights = []
        for i in range(m):
            prod = 1
            for j in range(m):
                if j != i:
                    prod = prod * (x[i] - x[j]) % p
            weights.append(field.inv(prod))
        rows = []
        for k in range(m, n):
            full = 1
            for j in range(m):
                full = full * (x[k] - x[j]) % p
            rows.append(
                [full * field.inv((x[k] - x[i]) % p) % p * weights[i] % p for i in range(m)]
            )
        _extend_cache[key] = rows
    return rows


def extend_values_to_power_of_2(field: NttField, values: Sequence[int], n: int) -> Vec:
    """Append evaluations until there are ``n`` (draft §6.1.3.2).

    The lowest-degree interpolant of the ``m = len(values)`` given points (at the
    first ``m`` of the ``n``-th roots of unity) is evaluated at the other roots.

    Parameters
    ----------
    field : NttField
        The field.
    values : sequence of int
        The known evaluations.
    n : int
        Target length, a power of two ``>= m``.

    Returns
    -------
    list of int
        A new list of ``n`` evaluations.
    """
    log2_exact(n)
    m = len(values)
    if m > n:
        raise ValueError("more values than the target length")
    out = list(values)
    for row in _extension_matrix(field, m, n):
        out.append(field.dot(row, values))
    return out


def powers_columns(field: NttField, t: Any, count: int, scale: int = 1) -> Any:
    """``[s * t^0, ..., s * t^(count-1)]`` reduced, one row per power (``t`` a row or an int)."""
    p = field.MODULUS
    out = np.empty((count, *np.shape(t)), dtype=object)
    x: Any = scale % p
    for e in range(count):
        out[e] = x
        x = x * t % p
    return out


def lagrange_columns_scaled(field: NttField, powers: Any) -> Any:
    """``n * L_k(t)`` for every node ``k``, from the rows ``t^0 .. t^(n-1)``; unreduced.

    ``L_k(t) = prod_{j != k} (t - W^j) / (W^k - W^j)`` equals
    ``(1/n) * sum_e t^e * W^(-k*e)`` (divide ``t^n - 1`` by ``t - W^k``): a DFT of the
    powers of ``t`` with the root ``W^-1``, here radix 2 over whole rows (one
    numpy operation per stage for every report), without an inversion and without
    reducing (each stage's twiddle adds a field element's bits; the caller reduces
    once). Valid for every ``t``, a node included. Equals :func:`lagrange_coeffs`
    times ``n``, modulo ``p``.

    Parameters
    ----------
    field : NttField
        The field.
    powers : numpy.ndarray
        ``(n, ...)`` object array, ``n`` a power of two, row ``e`` holding ``t^e``.

    Returns
    -------
    numpy.ndarray
        ``(n, ...)`` object array of Python ints.
    """
    n = len(powers)
    p = field.MODULUS
    roots = field.nth_root_powers(n)

    def twiddles(ks: list[int]) -> Any:
        tw = np.empty(len(ks), dtype=object)
        tw[:] = [roots[k] % p for k in ks]
        return tw

    return _inverse_dft(
        np.asarray(powers, dtype=object), twiddles, lambda a, b: a * b, np.add, np.subtract
    )


def _inverse_dft(a: Any, twiddles: Callable[[list[int]], Any], mul: Any, add: Any, sub: Any) -> Any:
    """Radix-2 DFT by ``W^-1`` over the first axis of ``a`` (``n`` rows, a power of two).

    ``twiddles(ks)`` gives the array of ``W^k`` for the root indices ``ks``; ``mul``,
    ``add`` and ``sub`` are the element-wise operations (object or ``uint64`` arrays).
    """
    n = len(a)
    bits = log2_exact(n)
    order = [int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)]
    a, rest = a[order], a.shape[1:]
    size = 2
    while size <= n:
        half = size // 2
        blocks = a.reshape(n // size, size, *rest)
        even, odd = blocks[:, :half], blocks[:, half:]
        if half > 1:
            tw = twiddles([-k * (n // size) % n for k in range(half)])
            odd = mul(odd, tw.reshape(1, half, *([1] * len(rest))))
        a = np.concatenate([add(even, odd), sub(even, odd)], axis=1).reshape(n, *rest)
        size *= 2
    return a


def lagrange_columns(field: NttField, n: int, t: Any) -> Any:
    """``L_k(t)`` for ``k < n``, reduced: :func:`lagrange_coeffs` for a row of points.

    Field64 runs on ``uint64`` words (:mod:`datafed.hazmat._field_np`), every step
    reduced; the result is an object array of Python ints either way.
    """
    p = field.MODULUS
    if p == P64:
        return _lagrange64(field, n, t).astype(object)
    scaled = lagrange_columns_scaled(field, powers_columns(field, t, n))
    return scaled * field.inv(n) % p


def _lagrange64(field: NttField, n: int, t: Any) -> Any:
    """:func:`lagrange_columns` for Field64 on ``uint64`` arrays (same DFT, reduced)."""
    tt = np.asarray(t, dtype=object).astype(np.uint64)
    pw = np.empty((n, *tt.shape), dtype=np.uint64)
    pw[0] = field.inv(n)  # the 1/n of the basis, folded into the powers
    for e in range(1, n):
        pw[e] = mul64(pw[e - 1], tt)
    roots = field.nth_root_powers(n)
    return _inverse_dft(
        pw, lambda ks: np.array([roots[k] for k in ks], dtype=np.uint64), mul64, add64, sub64
    )
