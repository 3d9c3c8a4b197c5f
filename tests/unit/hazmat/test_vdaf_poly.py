"""NTT and Lagrange-basis helpers (draft-irtf-cfrg-vdaf-20 §6.1.2, §6.1.3) against naive algebra."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import Field64, Field128, NttField, inv_ntt, ntt
from datafed.hazmat._lagrange import extend_values_to_power_of_2, lagrange_coeffs, poly_eval_batched
from datafed.hazmat._ntt import double_evaluations_rows, inv_ntt_rows, ntt_rows

FIELDS = [Field64, Field128]


def horner(field: NttField, coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % field.MODULUS
    return acc


def rand_poly(field: NttField, rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(field.MODULUS) for _ in range(n)]


@pytest.mark.parametrize("field", FIELDS, ids=repr)
@settings(max_examples=25, deadline=None)
@given(log_n=st.integers(0, 6), rows=st.sampled_from([1, 2, 5, 33]), seed=st.integers(0, 2**32))
def test_ntt_matches_naive_evaluation(field: NttField, log_n: int, rows: int, seed: int) -> None:
    # rows=33 at n>=2 takes the batched numpy path, rows=1 the list path.
    rng = random.Random(seed)
    n = 1 << log_n
    p = field.MODULUS
    polys = [rand_poly(field, rng, rng.randint(1, n)) for _ in range(rows)]
    roots = field.nth_root_powers(n)
    s = field.nth_root(2 * n)
    values = ntt_rows(field, polys, n)
    assert values == [[horner(field, c, w) for w in roots] for c in polys]
    coset = ntt_rows(field, polys, n, set_s=True)
    assert coset == [[horner(field, c, s * w % p) for w in roots] for c in polys]
    assert inv_ntt_rows(field, values, n) == [c + [0] * (n - len(c)) for c in polys]
    doubled = double_evaluations_rows(field, values)
    assert doubled == [[horner(field, c, w) for w in field.nth_root_powers(2 * n)] for c in polys]
    assert ntt(field, polys[0], n) == values[0]
    assert inv_ntt(field, values[0], n)[: len(polys[0])] == polys[0]


@pytest.mark.parametrize("field", FIELDS, ids=repr)
def test_lagrange_evaluation_anywhere_including_the_nodes(field: NttField) -> None:
    rng = random.Random(7)
    for n in (1, 2, 8, 32):
        coeffs = [rand_poly(field, rng, n) for _ in range(3)]
        values = [[horner(field, c, w) for w in field.nth_root_powers(n)] for c in coeffs]
        for t in [rng.randrange(field.MODULUS) for _ in range(3)] + field.nth_root_powers(n)[:3]:
            assert poly_eval_batched(field, values, t) == [horner(field, c, t) for c in coeffs]
        # The coefficients are the Lagrange basis: sum to 1 (the constant polynomial 1).
        assert sum(lagrange_coeffs(field, n, 12345)) % field.MODULUS == 1


@pytest.mark.parametrize("field", FIELDS, ids=repr)
def test_extend_values_interpolates_lowest_degree(field: NttField) -> None:
    rng = random.Random(11)
    for n in (1, 2, 4, 16, 32):
        for m in sorted({1, n // 2 or 1, n - 1 or 1, n}):
            coeffs = rand_poly(field, rng, m)  # degree < m: determined by m points
            values = [horner(field, coeffs, w) for w in field.nth_root_powers(n)]
            assert extend_values_to_power_of_2(field, values[:m], n) == values
    with pytest.raises(ValueError):
        extend_values_to_power_of_2(field, [1, 2, 3], 2)
    with pytest.raises(ValueError):
        extend_values_to_power_of_2(field, [1, 2, 3], 6)


def test_bad_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        ntt(Field64, [1, 2, 3], 2)
    with pytest.raises(ValueError):
        inv_ntt(Field64, [1, 2, 3], 4)
    with pytest.raises(ValueError):
        poly_eval_batched(Field64, [[1, 2], [1, 2, 3, 4]], 5)
