from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import Packer, PackingOverflow, PaillierPrivateKey, PaillierPublicKey

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def test_layout_for_issue_parameters() -> None:
    p = Packer(modulus_bits=2048, value_bits=64, max_additions=1024)
    assert p.slot_bits == 64 + 10 + 1
    assert p.slots == 2047 // 75 == 27
    assert p.plaintexts_for(28) == 2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(I64, min_size=30, max_size=30), min_size=1, max_size=8))
def test_sum_of_packed_equals_slotwise_sum(rows: list[list[int]]) -> None:
    p = Packer(modulus_bits=2048, value_bits=64, max_additions=8)
    packed = [p.pack(r) for r in rows]
    summed = [sum(col) for col in zip(*packed, strict=True)]
    expected = [sum(col) for col in zip(*rows, strict=True)]
    assert p.unpack(summed, count=30, additions=len(rows)) == expected


def test_fixed_point_fractions() -> None:
    p = Packer(modulus_bits=2048, value_bits=32, frac_bits=8, max_additions=2)
    a, b = p.pack([1.5, -2.25, 3]), p.pack([0.5, Fraction(1, 4), -3])
    out = p.unpack([x + y for x, y in zip(a, b, strict=True)], count=3, additions=2)
    assert p.decode(out) == [2, -2, 0]


def test_value_range_is_checked() -> None:
    p = Packer(modulus_bits=2048, value_bits=16)
    p.pack([2**15 - 1, -(2**15)])
    with pytest.raises(ValueError, match="does not fit 16 signed bits"):
        p.pack([2**15])
    with pytest.raises(ValueError, match="finite"):
        p.pack([float("nan")])
    with pytest.raises(TypeError):
        p.pack(["1"])  # type: ignore[list-item]


def test_overflow_is_detected() -> None:
    p = Packer(modulus_bits=2048, value_bits=8, max_additions=4)
    top = p.pack([127] * p.slots)[0]
    # eight additions of the maximum overflow the headroom for four
    with pytest.raises(PackingOverflow):
        p.unpack([top * 8], count=p.slots, additions=4)
    # claiming fewer additions than were made is caught too
    with pytest.raises(PackingOverflow):
        p.unpack([top * 3], count=p.slots, additions=2)
    with pytest.raises(PackingOverflow):
        p.unpack([1 << (p.slots * p.slot_bits)], count=p.slots, additions=1)
    with pytest.raises(ValueError, match="additions must be in"):
        p.unpack([top], count=p.slots, additions=5)


def test_packed_paillier_end_to_end(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    p = Packer(modulus_bits=pk.bits, value_bits=64, max_additions=1024)
    rows = [[(-1) ** i * (2**62 + i * j) for i in range(40)] for j in range(3)]
    cts = [pk.encrypt_many(p.pack(r)) for r in rows]
    total = [pk.add_many(col) for col in zip(*cts, strict=True)]
    out = p.unpack(sk.decrypt_many(total), count=40, additions=3)
    assert out == [sum(col) for col in zip(*rows, strict=True)]
