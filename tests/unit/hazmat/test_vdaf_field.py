"""Field64 / Field128 (draft-irtf-cfrg-vdaf-20 §6.1) against Python big integers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import (
    Field64,
    Field128,
    InvalidShare,
    NttField,
    add64,
    mul64,
    sub64,
)
from datafed.hazmat._field import next_power_of_2
from datafed.hazmat._field_np import pow64

FIELDS = [Field64, Field128]
P64 = Field64.MODULUS


def elements(field: NttField) -> st.SearchStrategy[int]:
    p = field.MODULUS
    edges = [0, 1, 2, p - 1, p - 2, 2**32 - 1, 2**32, 2**63, (p - 1) // 2]
    return st.one_of(st.sampled_from(edges), st.integers(0, p - 1))


def vectors(field: NttField, size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(elements(field), min_size=size, max_size=size)


def test_parameters_match_the_draft() -> None:
    # §6.1.4: moduli, sizes and generator orders.
    assert Field64.MODULUS == 2**64 - 2**32 + 1 == 2**32 * 4294967295 + 1
    assert Field128.MODULUS == 2**66 * 4611686018427387897 + 1
    assert (Field64.ENCODED_SIZE, Field128.ENCODED_SIZE) == (8, 16)
    for f in FIELDS:
        g, p = f.GENERATOR, f.MODULUS
        assert pow(g, f.GEN_ORDER, p) == 1
        assert pow(g, f.GEN_ORDER // 2, p) == p - 1  # order exactly GEN_ORDER
        assert f.nth_root(1) == 1 and f.nth_root(2) == p - 1
        w = f.nth_root(8)
        assert f.nth_root_powers(8) == [pow(w, i, p) for i in range(8)]
    with pytest.raises(ValueError):
        Field64.nth_root(2**33)
    with pytest.raises(ValueError):
        Field64.nth_root(12)


@pytest.mark.parametrize("field", FIELDS, ids=repr)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_vector_ops_match_big_ints(field: NttField, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 12))
    a, b = data.draw(vectors(field, n)), data.draw(vectors(field, n))
    p = field.MODULUS
    assert field.vec_add(a, b) == [(x + y) % p for x, y in zip(a, b, strict=True)]
    assert field.vec_sub(a, b) == [(x - y) % p for x, y in zip(a, b, strict=True)]
    assert field.vec_mul(a, b) == [x * y % p for x, y in zip(a, b, strict=True)]
    assert field.vec_neg(a) == [-x % p for x in a]
    assert field.dot(a, b) == sum(x * y for x, y in zip(a, b, strict=True)) % p
    encoded = field.encode_vec(a)
    assert encoded == b"".join(x.to_bytes(field.ENCODED_SIZE, "little") for x in a)
    assert field.decode_vec(encoded) == a
    nonzero = [x for x in a if x]
    for x in nonzero:
        assert x * field.inv(x) % p == 1


@pytest.mark.parametrize("field", FIELDS, ids=repr)
def test_decode_rejects_out_of_range_and_bad_length(field: NttField) -> None:
    size = field.ENCODED_SIZE
    with pytest.raises(InvalidShare):
        field.decode_vec(field.MODULUS.to_bytes(size, "little"))
    with pytest.raises(InvalidShare):
        field.decode_vec(b"\xff" * size)
    with pytest.raises(InvalidShare):
        field.decode_vec(b"\x00" * (size + 1))
    with pytest.raises(ValueError):
        field.vec_add([1], [1, 2])
    with pytest.raises(ZeroDivisionError):
        field.inv(0)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_numpy_field64_kernels_match_big_ints(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    a, b = data.draw(vectors(Field64, n)), data.draw(vectors(Field64, n))
    na, nb = np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)
    assert mul64(na, nb).tolist() == [x * y % P64 for x, y in zip(a, b, strict=True)]
    assert add64(na, nb).tolist() == [(x + y) % P64 for x, y in zip(a, b, strict=True)]
    assert sub64(na, nb).tolist() == [(x - y) % P64 for x, y in zip(a, b, strict=True)]
    e = data.draw(st.integers(0, 2**70))
    assert pow64(na, e).tolist() == [pow(x, e, P64) for x in a]


def test_numpy_field64_mul_exhaustive_edges() -> None:
    # Every pair of limb-boundary values: carries in the 128-bit product and the reduction.
    edges = [0, 1, 2, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 2**33, P64 - 2, P64 - 1]
    a = np.array([x for x in edges for _ in edges], dtype=np.uint64)
    b = np.array([y for _ in edges for y in edges], dtype=np.uint64)
    assert mul64(a, b).tolist() == [int(x) * int(y) % P64 for x, y in zip(a, b, strict=True)]
    assert add64(a, b).tolist() == [(int(x) + int(y)) % P64 for x, y in zip(a, b, strict=True)]
    assert sub64(a, b).tolist() == [(int(x) - int(y)) % P64 for x, y in zip(a, b, strict=True)]


def test_next_power_of_2() -> None:
    assert [next_power_of_2(x) for x in (1, 2, 3, 4, 5, 31, 32, 33)] == [1, 2, 4, 4, 8, 32, 32, 64]
    with pytest.raises(ValueError):
        next_power_of_2(0)
