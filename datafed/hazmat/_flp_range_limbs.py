"""The range-check query (:mod:`datafed.hazmat._flp_range`) for Field128 on limbs.

:func:`query_limbs` computes the wires and the gadget polynomial at the test point ``t``
that :func:`~datafed.hazmat._flp_range.query_range_checked` computes on Python integers,
with every field element of every report on ``int64`` limbs
(:mod:`datafed.hazmat._limbs128`): the shares are read from their ``uint64`` words, every
product is exact on limbs, sums of products are reduced once, and only the results
become Python integers. The steps and their formulas are the same:

* the powers ``t^e`` (by doubling: ``t^(e + 2^s) = t^e * t^(2^s)``, one step for each
  power of two), the wires' Lagrange basis ``L_k(t) = (1/n) sum_e t^e W^(-ke)`` as a
  radix-2 DFT (:func:`dft_limbs`);
* the wires: ``L_(i+1)(t) * r_i^(j+1)`` chained over ``j`` (reduced at each step), the
  even wires' and the odd wires' sums over the calls in one ``einsum`` each, the
  constant term ``-h * sum_i L_(i+1)(t)`` and the seeds' ``L_0(t)`` term added before
  the one reduction;
* the gadget polynomial at ``t``: ``(1 + t^n)/2 * A(t) + (1 - t^n)/2 * B(t)`` with
  ``A`` over the wires' nodes (the basis above) and ``B`` over their coset, evaluated
  through its coefficients (a DFT of its values) rather than its basis at ``t / z``.

``tests/unit/hazmat/test_flp_range.py`` holds the result equal to the scalar query.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datafed.hazmat._field_cols import Cols, Mask, Words
from datafed.hazmat._flp_circuits import range_checked_weights
from datafed.hazmat._flp_vec_circuits import (
    HistogramCircuit,
    MultihotCountVecCircuit,
    SumVecCircuit,
)
from datafed.hazmat._lagrange import _extension_matrix
from datafed.hazmat._limbs128 import (
    LIMBS,
    Limbs,
    dot_wide,
    from_ints,
    from_words,
    mul_wide,
    reduce,
    to_ints,
)


def _const(values: list[int]) -> Limbs:
    """Limbs of constants, ``(5, len(values))``."""
    return from_ints(np.array(values, dtype=object))


def powers_limbs(t: Limbs, count: int) -> Limbs:
    """``t^0 .. t^(count - 1)`` as reduced limbs ``(5, count, N)`` of ``t`` ``(5, N)``."""
    out = np.zeros((LIMBS, count, *t.shape[1:]), dtype=np.int64)
    out[0, 0] = 1
    have = 1
    if count > 1:
        out[:, 1] = t
        have = 2
    while have < count:  # t^(have .. 2 have - 1) = t^(0 .. have - 1) * t^have
        step = min(have, count - have)
        top = reduce(mul_wide(out[:, have - 1], t))  # t^have
        out[:, have] = top
        if step > 1:
            out[:, have + 1 : have + step] = reduce(mul_wide(out[:, 1:step], top[:, None]))
        have += step
    return out


def dft_limbs(field: Any, a: Limbs) -> Limbs:
    """``sum_k W^(-k e) a_k`` for every ``e``: radix-2 over axis 1 of ``(5, n, N)`` limbs.

    ``W`` is the field's ``n``-th root of unity. Only the twiddle products are reduced
    stage by stage: the sums grow by at most one reduced element's bound a stage (after
    ``s`` stages, below ``(s + 1) * (2^26 + 2^22)``: a twiddle product stays far inside
    ``int64`` for any ``n`` that fits in memory), and the result is reduced once.
    """
    n, rest = a.shape[1], a.shape[2:]
    bits = n.bit_length() - 1
    roots = field.nth_root_powers(n)
    order = [int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)]
    a = a[:, order]
    size = 2
    while size <= n:
        half = size // 2
        blocks = a.reshape(LIMBS, n // size, size, *rest)
        even, odd = blocks[:, :, :half], blocks[:, :, half:]
        if half > 1:
            tw = _const([roots[-k * (n // size) % n] for k in range(half)])
            odd = reduce(mul_wide(odd, tw.reshape(LIMBS, 1, half, *([1] * len(rest)))))
        a = np.concatenate([even + odd, even - odd], axis=2).reshape(LIMBS, n, *rest)
        size *= 2
    return reduce(a)


def query_limbs(
    field: Any,
    words: tuple[Words, Words, Words],
    t: Cols,
    c: int,
    calls: int,
    wlen: int,
    num_shares: int,
) -> tuple[list[Any], Cols, Mask, Limbs]:
    """The ``2c`` wires at ``t``, the gadget polynomial at ``t``, the flags, the measurement.

    ``words`` holds the ``uint64`` words of the measurement, proof and joint-randomness
    shares (``(L, N, 2)``), ``t`` the test points (Python integers); ``c``, ``calls`` and
    ``wlen`` are the chunk length, the gadget calls and the wire polynomials' length. A
    report is flagged ``False`` when ``t`` is a wire root of unity (``t^wlen == 1``).
    The measurement shares are returned as limbs for :func:`eval_output_limbs`.
    """
    pw = powers_limbs(from_ints(t[None])[:, 0], wlen + 1)
    t_w = pw[:, wlen]
    ok = np.asarray(to_ints(t_w) != 1, dtype=bool)
    low = reduce(mul_wide(pw[:, :wlen], _const([field.inv(wlen)])[:, :, None]))  # t^e / wlen
    lag = dft_limbs(field, low)  # L_k(t)
    mw = words[0]
    flat = np.zeros((LIMBS, calls * c, t.shape[0]), dtype=np.int64)
    flat[:, : len(mw)] = from_words(mw[..., 0], mw[..., 1])
    wires = _wires(field, words, flat.reshape(LIMBS, calls, c, -1), lag, c, calls, num_shares)
    half = _const([field.inv(2)])[:, 0, None]
    plus, minus = t_w.copy(), -t_w
    plus[0] += 1
    minus[0] += 1
    coefs = (reduce(mul_wide(plus, half)), reduce(mul_wide(minus, half)))
    glen = 2 * wlen - 1
    gw = words[1][2 * c : 2 * c + glen]
    gt = _gadget(field, from_words(gw[..., 0], gw[..., 1]), low, lag, coefs)
    return wires, gt, ok, flat[:, : len(mw)]


def _wires(
    field: Any,
    words: tuple[Words, Words, Words],
    x: Limbs,
    lag: Limbs,
    c: int,
    calls: int,
    shares: int,
) -> list[Any]:
    """The ``2c`` wire values at ``t`` (Python integers), from the basis ``lag``.

    ``x`` holds the measurement shares, zero-padded to ``calls * c``, as ``(5, calls, c,
    N)`` limbs.
    """
    _, pw, jw = words
    n = lag.shape[2]
    r = from_words(jw[:calls, :, 0], jw[:calls, :, 1])
    seeds = from_words(pw[: 2 * c, :, 0], pw[: 2 * c, :, 1])
    head, coef = lag[:, 0], lag[:, 1 : calls + 1]
    chains = np.empty((LIMBS, calls, c, n), dtype=np.int64)
    chain = coef
    for j in range(c):  # L_(i+1)(t) * r_i^(j+1), reduced at each step
        chain = chains[:, :, j] = reduce(mul_wide(chain, r))
    wide = np.empty((2 * LIMBS - 1, c, 2, n), dtype=np.int64)
    wide[:, :, 0] = dot_wide(chains, x)
    wide[:, :, 1] = dot_wide(coef[:, :, None], x)
    wide += mul_wide(head[:, None, None], seeds.reshape(LIMBS, c, 2, n))
    # -h * sum_i L_(i+1)(t), h = 1 / shares: limbs are signed, so negate the product
    h = reduce(mul_wide(coef.sum(axis=1), _const([field.inv(shares)])[:, 0, None]))
    wide[:LIMBS, :, 1] -= h[:, None]
    return list(to_ints(wide.reshape(2 * LIMBS - 1, 2 * c, n)))


def _gadget(field: Any, g: Limbs, low: Limbs, lag: Limbs, coefs: tuple[Limbs, Limbs]) -> Cols:
    """The gadget polynomial at ``t`` from its ``2 * wlen - 1`` values ``g``.

    ``G(t) = (1 + t^wlen)/2 * A(t) + (1 - t^wlen)/2 * B(t)`` (``coefs``), as in
    :func:`~datafed.hazmat._flp_range._gadget_at`: ``A(t)`` is the inner product of the
    even values with the wires' basis ``lag``; ``B(t / z) = sum_e t^e / wlen * z^-e *
    beta_e`` with ``beta`` the DFT by ``W^-1`` of the odd values (the last one given by
    the extension row), ``low`` holding ``t^e / wlen``.
    """
    wlen = lag.shape[1]
    glen = 2 * wlen - 1
    ext = _const(_extension_matrix(field, glen, 2 * wlen)[0])
    odd = np.empty((LIMBS, wlen, g.shape[2]), dtype=np.int64)
    odd[:, :-1] = g[:, 1::2]
    odd[:, -1] = reduce(dot_wide(ext[:, :, None], g))  # the extension's last value
    roots = field.nth_root_powers(2 * wlen)
    zinv = _const([roots[-e % (2 * wlen)] for e in range(wlen)])
    beta = reduce(mul_wide(dft_limbs(field, odd), zinv[:, :, None]))
    a = reduce(dot_wide(lag, g[:, 0::2]))
    b = reduce(dot_wide(low, beta))
    out: Cols = to_ints(mul_wide(coefs[0], a) + mul_wide(coefs[1], b))
    return out


def eval_output_limbs(
    valid: Any, x: Limbs, outputs: list[Any], num_shares: int
) -> list[Any] | None:
    """``valid.eval_output`` with the measurement shares ``x`` on limbs ``(5, MEAS_LEN, N)``.

    The same formulas as :class:`~datafed.hazmat._flp_vec_circuits.SumVecCircuit`,
    :class:`~datafed.hazmat._flp_vec_circuits.HistogramCircuit` and
    :class:`~datafed.hazmat._flp_vec_circuits.MultihotCountVecCircuit` (their
    measurement sums are sums of limbs, one reduction each), so that the measurement
    never becomes Python integers; ``None`` for any other circuit (the caller then runs
    its ``eval_output``). ``outputs`` are the gadget's outputs, rows of Python integers.
    """
    kind, field = type(valid), valid.field
    if kind not in (SumVecCircuit, HistogramCircuit, MultihotCountVecCircuit):
        return None
    p = field.MODULUS
    range_check = sum(outputs) % p
    if kind is SumVecCircuit:
        return [range_check]
    if kind is HistogramCircuit:
        total = to_ints(x.sum(axis=1))
        return [range_check, (total - field.inv(num_shares)) % p]
    length = valid.length
    weights = range_checked_weights(valid.max_weight)
    total = to_ints(x[:, :length].sum(axis=1))
    tail = x[:, length : length + len(weights)]
    reported = to_ints(dot_wide(_const(weights)[:, :, None], tail))
    return [range_check, (total - reported) % p]
