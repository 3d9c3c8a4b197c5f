"""Vectorised arithmetic for the VDAF fields on numpy arrays.

Field64 (``p = 2^64 - 2^32 + 1``, draft-irtf-cfrg-vdaf-20 §6.1.4) lives in
``uint64`` arrays.  numpy has no 64x64 -> 128-bit multiply, so :func:`mul64`
splits each operand into 32-bit halves, assembles the 128-bit product as two
words with explicit carries, and reduces it with the special form of ``p``:
``2^64 = 2^32 - 1`` and ``2^96 = -1`` (mod p).  Every intermediate fits in 64 bits;
the reduction is exact for every pair of inputs in ``[0, p)``.

Field128 has no such word-level kernel here: its elements are Python integers in
numpy ``object`` arrays (:func:`obj_mul` and friends), which amortise the
interpreter's per-operation dispatch over a whole array.  Measured in
``benchmarks/test_bench_prio3.py`` (row ``prio3.field``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
ObjArray = npt.NDArray[Any]

P64 = 2**64 - 2**32 + 1
_P = np.uint64(P64)
_EPS = np.uint64(0xFFFFFFFF)  # 2^64 mod p = 2^32 - 1
_LO32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def add64(a: U64, b: U64) -> U64:
    """``(a + b) mod p`` element-wise for reduced Field64 arrays.

    ``a`` and ``b`` are ``uint64`` arrays with elements in ``[0, p)`` (broadcastable).
    """
    s = a + b
    # A wrapped sum lost 2^64 = eps (mod p); it is below 2^64 - eps, so adding eps is safe.
    s += (s < a).astype(np.uint64) * _EPS
    s -= (s >= _P).astype(np.uint64) * _P
    return s


def sub64(a: U64, b: U64) -> U64:
    """``(a - b) mod p`` element-wise for reduced Field64 arrays.

    ``a`` and ``b`` are ``uint64`` arrays with elements in ``[0, p)`` (broadcastable).
    """
    d = a - b
    # A borrow added 2^64; a - b + p = d - 2^64 + p = d - eps.
    d -= (a < b).astype(np.uint64) * _EPS
    return d


def mul64(a: U64, b: U64) -> U64:
    """``(a * b) mod p`` element-wise for reduced Field64 arrays (128-bit safe).

    ``a`` and ``b`` are ``uint64`` arrays with elements in ``[0, p)`` (broadcastable).
    """
    a0, a1 = a & _LO32, a >> _S32
    b0, b1 = b & _LO32, b >> _S32
    ll, hh = a0 * b0, a1 * b1
    lh, hl = a0 * b1, a1 * b0
    mid = lh + hl  # may wrap: the lost 2^64 is 2^96 of the product
    mid_carry = (mid < lh).astype(np.uint64)
    lo = ll + (mid << _S32)
    lo_carry = (lo < ll).astype(np.uint64)
    # hi < 2^64 exactly, because the product is below 2^128.
    hi = hh + (mid >> _S32) + (mid_carry << _S32) + lo_carry
    return _reduce128(hi, lo)


def _reduce128(hi: U64, lo: U64) -> U64:
    # x = hi * 2^64 + lo = hi_hi * 2^96 + hi_lo * 2^64 + lo
    #   = lo - hi_hi + hi_lo * (2^32 - 1)   (mod p)
    hi_hi, hi_lo = hi >> _S32, hi & _LO32
    t = lo - hi_hi
    t -= (lo < hi_hi).astype(np.uint64) * _EPS  # borrow: subtract 2^64 = eps
    u = (hi_lo << _S32) - hi_lo  # hi_lo * eps < 2^64
    r = t + u
    r += (r < u).astype(np.uint64) * _EPS  # carry: add 2^64 = eps
    r -= (r >= _P).astype(np.uint64) * _P
    return r


def pow64(a: U64, e: int) -> U64:
    """``a^e mod p`` element-wise by square-and-multiply (``e >= 0``).

    Parameters
    ----------
    a : numpy.ndarray
        Reduced ``uint64`` array.
    e : int
        Public exponent.

    Returns
    -------
    numpy.ndarray
        The powers.
    """
    result = np.ones_like(a)
    base = a.copy()
    while e:
        if e & 1:
            result = mul64(result, base)
        e >>= 1
        if e:
            base = mul64(base, base)
    return result


def to_u64(values: Any) -> U64:
    """A ``uint64`` array of reduced Field64 elements (from ints or an array)."""
    return np.asarray(values, dtype=np.uint64)


def obj_array(values: Any) -> ObjArray:
    """A numpy ``object`` array of Python ints (for Field128 kernels)."""
    out = np.empty(np.shape(values), dtype=object)
    out[...] = values
    return out
