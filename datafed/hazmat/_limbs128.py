"""Field128 arithmetic on numpy ``int64`` limbs, for sums of many products.

An element of Field128 (``p = 2^128 - 28 * 2^64 + 1``, draft-irtf-cfrg-vdaf-20 §6.1.4)
is held as five limbs of 26 bits, ``x = sum_m l[m] * 2^(26 m)``, along the first axis of an
``int64`` array of shape ``(5, ...)``: one numpy operation works on that limb of every
element at once. Python integers cost 150-250 ns a Field128 product and 250 a reduction
in an ``object`` array (each element an interpreter-level operation); here a product is
25 limb products of at most 52 bits, well inside ``int64``, so thousands of products are
summed before anything is reduced, and a reduction is a few vector passes using the
modulus's special form (``2^130 = 112 * 2^64 - 4 = 458752 * 2^52 - 4 mod p``).

* :func:`from_words`, :func:`from_ints`: limbs from ``uint64`` word pairs (the wire
  encoding, no Python integer made) or from Python integers;
* :func:`mul_wide`: products as nine unreduced positions (``(9, ...)``), which add up:
  sums of products stay unreduced until :func:`reduce`;
* :func:`reduce`: positions (unreduced, each below ``2^62`` in absolute value) to five
  limbs congruent modulo ``p``, each below ``2^26 + 2^22`` in absolute value (signed:
  a lazily reduced element, good for further products);
* :func:`to_ints`: limbs or positions to Python integers in ``[0, p)``.

A product of two reduced elements has positions below ``5 * (2^26 + 2^22)^2 < 2^54.5``, so
sums of up to 128 products (:data:`MAX_TERMS`) stay below ``2^62``.
``tests/unit/hazmat/test_limbs128.py`` holds every function equal to Python integers on
edge values (0, 1, ``p - 1``, powers of two, the limbs' extremes) and random ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

P = 2**128 - 28 * 2**64 + 1
"""The Field128 modulus."""
BITS = 26
LIMBS = 5
MAX_TERMS = 128
"""Products of reduced elements that may be summed before :func:`reduce`."""
_MASK = (1 << BITS) - 1
_FOLD = 458752  # 2^130 = 458752 * 2^52 - 4 (mod p): a limb at position m >= 5 goes to m-3
_KP = 16 * P  # added before the final carries: makes any reduced value non-negative

Limbs = npt.NDArray[np.int64]
"""``(5, ...)`` limbs or ``(k, ...)`` unreduced positions."""


def _split(value: int, count: int) -> list[int]:
    return [(value >> (BITS * m)) & _MASK for m in range(count)]


_KP_LIMBS = np.array(_split(_KP, LIMBS + 1), dtype=np.int64)


def from_words(lo: Any, hi: Any) -> Limbs:
    """Limbs of ``lo + hi * 2^64`` for ``uint64`` arrays ``lo``, ``hi`` (any shape)."""
    lo, hi = np.asarray(lo, dtype=np.uint64), np.asarray(hi, dtype=np.uint64)
    m = np.uint64(_MASK)
    out = np.empty((LIMBS, *np.broadcast_shapes(lo.shape, hi.shape)), dtype=np.uint64)
    out[0] = lo & m
    out[1] = (lo >> np.uint64(26)) & m
    out[2] = (lo >> np.uint64(52)) | ((hi & np.uint64(0x3FFF)) << np.uint64(12))
    out[3] = (hi >> np.uint64(14)) & m
    out[4] = hi >> np.uint64(40)
    return out.view(np.int64)


def _to16(x: int) -> bytes:
    return x.to_bytes(16, "little")


def words_of_ints(values: Any) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """``(lo, hi)`` ``uint64`` words of an array of Python integers in ``[0, 2^128)``."""
    arr = np.asarray(values, dtype=object)
    data = b"".join(map(_to16, arr.ravel().tolist()))
    words = np.frombuffer(data, dtype="<u8").reshape(*arr.shape, 2)
    return words[..., 0].astype(np.uint64), words[..., 1].astype(np.uint64)


def from_ints(values: Any) -> Limbs:
    """Limbs of an array of Python integers in ``[0, 2^128)`` (any shape)."""
    return from_words(*words_of_ints(values))


def mul_wide(a: Limbs, b: Limbs) -> Limbs:
    """Products of reduced elements as nine unreduced positions, ``(9, ...)``.

    ``a`` and ``b`` are ``(5, ...)`` limbs whose remaining shapes broadcast; sums of
    results (up to :data:`MAX_TERMS` of them) may be passed to :func:`reduce`.
    """
    shape = np.broadcast_shapes(a.shape[1:], b.shape[1:])
    out = np.zeros((2 * LIMBS - 1, *shape), dtype=np.int64)
    for i in range(LIMBS):
        out[i : i + LIMBS] += a[i] * b
    return out


def dot_wide(a: Limbs, b: Limbs) -> Limbs:
    """``sum_i a[:, i] * b[:, i]`` as nine unreduced positions: ``(9, ...)``.

    ``a`` and ``b`` are ``(5, I, ...)`` limbs of reduced elements (their trailing shapes
    broadcast); ``I`` at most :data:`MAX_TERMS`. One ``einsum`` gives the 25 limb
    products summed over ``i``, then the anti-diagonals are added.
    """
    if a.shape[1] > MAX_TERMS or b.shape[1] > MAX_TERMS:
        raise ValueError(f"at most {MAX_TERMS} products per sum")
    grid = np.einsum("ai...,bi...->ab...", a, b)
    out = np.zeros((2 * LIMBS - 1, *grid.shape[2:]), dtype=np.int64)
    for i in range(LIMBS):
        out[i : i + LIMBS] += grid[i]
    return out


def _carry(z: Limbs) -> Limbs:
    """One parallel carry: every position to 26 bits plus its lower neighbour's carry."""
    out = np.empty((len(z) + 1, *z.shape[1:]), dtype=np.int64)
    out[0] = 0
    np.right_shift(z, BITS, out=out[1:])
    out[:-1] += z & _MASK
    return out


def _fold(z: Limbs) -> Limbs:
    """Positions ``m >= 5`` folded down: ``-4`` at ``m - 5``, ``458752 *`` at ``m - 3``."""
    k = len(z)
    if k <= LIMBS:
        return z
    top = z[LIMBS:]
    out = np.zeros((max(LIMBS, k - 3), *z.shape[1:]), dtype=np.int64)
    out[:LIMBS] = z[:LIMBS]
    out[: k - LIMBS] -= 4 * top
    out[2 : k - 3] += _FOLD * top
    return out


def reduce(z: Limbs) -> Limbs:
    """Unreduced positions (``|z| < 2^62``) to five limbs congruent modulo ``p``.

    The result's limbs are below ``2^26 + 2^22`` in absolute value (possibly
    negative): not canonical, but valid input for :func:`mul_wide`. Each round carries
    every position in parallel and folds what lies above ``2^130`` back with the
    modulus's special form, until five limbs remain (a shorter input is padded to the
    nine positions of a product, whose rounds are the ones bounded below); one more
    round leaves limb 2 large (below ``2^41``) and limb 0 just above ``2^26``, whose
    carries go to limbs 3 and 1.

    Bounds for nine positions below ``2^62``: after the first round, below ``2^55``
    (seven positions); after the second, ``2^48`` (five); after the third, limb 2 below
    ``2^26 + 458752 * 2^22 < 2^41``, limb 0 below ``2^26 + 4 * 2^22`` and the others
    below ``2^26 + 2^22``; the two carries add below ``2^15`` to limb 3 and below ``2`` to
    limb 1.
    """
    if len(z) < 2 * LIMBS - 1:
        pad = np.zeros((2 * LIMBS - 1 - len(z), *z.shape[1:]), dtype=np.int64)
        z = np.concatenate([z, pad])
    while len(z) > LIMBS:
        z = _fold(_carry(z))
    z = _fold(_carry(z))
    for m in (0, 2):
        z[m + 1] += z[m] >> BITS
        z[m] &= _MASK
    return z


def to_ints(z: Limbs) -> npt.NDArray[Any]:
    """Python integers in ``[0, p)`` (an ``object`` array of shape ``z.shape[1:]``).

    ``z`` is limbs or unreduced positions (as :func:`reduce` takes them).
    """
    r = reduce(np.asarray(z, dtype=np.int64))
    shape = r.shape[1:]
    v = np.zeros((LIMBS + 1, *shape), dtype=np.int64)
    v[:LIMBS] = r
    v += _KP_LIMBS.reshape(LIMBS + 1, *([1] * len(shape)))  # 16p > |r|: now positive
    for m in range(LIMBS):  # exact carries: limbs of 26 bits, the value below 2^133
        v[m + 1] += v[m] >> BITS
        v[m] &= _MASK
    u = v.astype(np.uint64)
    words = np.empty((*shape, 3), dtype="<u8")
    words[..., 0] = u[0] | (u[1] << np.uint64(26)) | (u[2] << np.uint64(52))
    words[..., 1] = (u[2] >> np.uint64(12)) | (u[3] << np.uint64(14)) | (u[4] << np.uint64(40))
    words[..., 2] = (u[4] >> np.uint64(24)) | (u[5] << np.uint64(2))
    raw = np.ascontiguousarray(words).view("V24").reshape(shape).ravel().tolist()
    out = np.empty(len(raw), dtype=object)
    out[:] = [int.from_bytes(b, "little") % P for b in raw]
    return out.reshape(shape)
