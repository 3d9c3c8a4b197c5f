"""Field128 on ``int64`` limbs (:mod:`datafed.hazmat._limbs128`) against Python integers.

Every function must give exactly what Python integers give modulo ``p``: on edge values
(0, 1, ``p - 1``, around ``2^64`` and ``2^128``, the limbs' extremes), on random
values, along chains of products (the lazily reduced limbs stay bounded), and for sums of
the most products allowed of the largest limbs a reduction can leave.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from datafed.hazmat import Field128, decode_words
from datafed.hazmat import _limbs128 as limbs
from datafed.hazmat._flp_range_limbs import dft_limbs, powers_limbs

P = Field128.MODULUS
BOUND = 2**26 + 2**22
EDGE = [
    0,
    1,
    2,
    P - 1,
    P - 2,
    P,  # the encoding allows up to 2^128 - 1; the limbs take any 128-bit value
    2**128 - 1,
    2**64 - 1,
    2**64,
    2**104,
    2**127,
    (1 << 26) - 1,
    28 * 2**64 - 1,  # 2^128 mod p
]


def _values(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return EDGE + [rng.randrange(P) for _ in range(count)]


def _col(values: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def test_p_is_field128() -> None:
    assert limbs.P == P == 2**66 * 4611686018427387897 + 1


def test_round_trip_through_limbs_and_words() -> None:
    vals = _values(500, 1)
    assert list(limbs.to_ints(limbs.from_ints(_col(vals)))) == [v % P for v in vals]
    data = b"".join(v.to_bytes(16, "little") for v in vals)
    w = decode_words(data, len(vals), 1)[0]
    got = limbs.to_ints(limbs.from_words(w[:, 0], w[:, 1]))
    assert list(got) == [v % P for v in vals]
    assert int(np.max(limbs.from_ints(_col(vals)))) < 2**26


def test_products_equal_python_ints() -> None:
    a, b = _values(1000, 2), _values(1000, 3)[::-1]
    wide = limbs.mul_wide(limbs.from_ints(_col(a)), limbs.from_ints(_col(b)))
    assert wide.shape == (9, len(a))
    assert list(limbs.to_ints(wide)) == [x * y % P for x, y in zip(a, b, strict=True)]
    every = [(x, y) for x in EDGE for y in EDGE]  # every pair of edge values
    xs, ys = _col([x for x, _ in every]), _col([y for _, y in every])
    got = limbs.to_ints(limbs.mul_wide(limbs.from_ints(xs), limbs.from_ints(ys)))
    assert list(got) == [x * y % P for x, y in every]


def test_chains_of_reduced_products_stay_bounded_and_exact() -> None:
    a, b = _values(300, 4), _values(300, 5)
    la, lb = limbs.from_ints(_col(a)), limbs.from_ints(_col(b))
    ref = [x % P for x in a]
    for _ in range(40):
        la = limbs.reduce(limbs.mul_wide(la, lb))
        ref = [x * y % P for x, y in zip(ref, b, strict=True)]
        assert int(np.max(np.abs(la))) < BOUND
    assert list(limbs.to_ints(la)) == ref


def test_dot_of_the_most_products_of_the_largest_limbs() -> None:
    # The largest limbs a reduction may leave, of both signs, MAX_TERMS times.
    n, k = 4, limbs.MAX_TERMS
    worst = np.full((5, k, n), BOUND - 1, dtype=np.int64)
    worst[:, :, 1] *= -1
    worst[::2, :, 2] *= -1
    wide = limbs.dot_wide(worst, worst)
    assert int(np.max(np.abs(wide))) < 2**62
    value = sum((BOUND - 1) << (26 * m) for m in range(5))
    signed = [value, -value, sum((-1) ** (m + 1) * (BOUND - 1) << (26 * m) for m in range(5))]
    want = [k * v * v % P for v in signed] + [k * value * value % P]
    assert list(limbs.to_ints(wide)) == want
    red = limbs.reduce(wide)
    assert int(np.max(np.abs(red))) < BOUND
    assert list(limbs.to_ints(red)) == want


def test_dot_equals_python_ints_with_broadcast() -> None:
    rng = random.Random(6)
    a = [[rng.randrange(P) for _ in range(5)] for _ in range(7)]  # (7 terms, 5 reports)
    b = [[[rng.randrange(P) for _ in range(5)] for _ in range(3)] for _ in range(7)]
    la = limbs.from_ints(np.array(a, dtype=object))[:, :, None]  # broadcast over the 3
    lb = limbs.from_ints(np.array(b, dtype=object))
    got = limbs.to_ints(limbs.dot_wide(la, lb))
    for j in range(3):
        for r in range(5):
            assert got[j, r] == sum(a[i][r] * b[i][j][r] for i in range(7)) % P


def test_refusals() -> None:
    one = limbs.from_ints(_col([1]))
    with pytest.raises(ValueError, match="products per sum"):
        limbs.dot_wide(np.zeros((5, limbs.MAX_TERMS + 1, 1), dtype=np.int64), one[:, None])
    with pytest.raises(ValueError, match="number of bytes"):
        decode_words(bytes(31), 1, 2)
    with pytest.raises(OverflowError):
        limbs.from_ints(_col([2**128]))
    with pytest.raises(OverflowError):
        limbs.from_ints(_col([-1]))


@pytest.mark.parametrize("count", [1, 2, 5, 17, 33])
def test_powers_on_limbs_equal_pow(count: int) -> None:
    ts = [0, 1, P - 1, 2, *_values(20, 7)]
    got = limbs.to_ints(powers_limbs(limbs.from_ints(_col(ts)), count))
    assert got.shape == (count, len(ts))
    for e in range(count):
        assert list(got[e]) == [pow(t, e, P) for t in ts]


@pytest.mark.parametrize("n", [1, 2, 4, 16, 32])
def test_dft_on_limbs_equals_the_definition(n: int) -> None:
    rng = random.Random(n)
    vals = [[rng.randrange(P) for _ in range(3)] for _ in range(n)]
    vals[0] = [0, 1, P - 1]
    got = limbs.to_ints(dft_limbs(Field128, limbs.from_ints(np.array(vals, dtype=object))))
    w = Field128.nth_root_powers(n)
    for e in range(n):
        for j in range(3):
            assert got[e, j] == sum(w[-k * e % n] * vals[k][j] for k in range(n)) % P


def test_reduce_takes_any_positions_below_2_62() -> None:
    rng = np.random.default_rng(8)
    for k in (1, 5, 9, 12):
        z = rng.integers(-(2**62) + 1, 2**62, size=(k, 200), dtype=np.int64)
        z[:, 0] = 2**62 - 1  # the extremes, both signs
        z[:, 1] = -(2**62) + 1
        r = limbs.reduce(z.copy())
        assert r.shape == (5, 200)
        assert int(np.max(np.abs(r))) < BOUND
        want = [sum(int(z[m, j]) << (26 * m) for m in range(k)) % P for j in range(200)]
        assert list(limbs.to_ints(r)) == want
        assert list(limbs.to_ints(z)) == want
