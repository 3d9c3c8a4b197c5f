from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datafed.hazmat import (
    InvalidShare,
    SeedShare,
    VectorShare,
    add_shares,
    decode_fixed,
    derive_seed,
    encode_fixed,
    prg_bytes,
    prg_uint64,
    reconstruct_additive,
    split_additive,
)
from tests.vectors.hazmat import load

U64 = hnp.arrays(np.uint64, st.integers(0, 50), elements=st.integers(0, 2**64 - 1))


def test_aes_ctr_known_answer() -> None:
    v = load("prg")["aes128_ctr"]
    out = prg_bytes(bytes.fromhex(v["key"]), 64, counter_block=bytes.fromhex(v["counter"]))
    assert out.hex() == v["keystream"]


def test_hkdf_known_answer() -> None:
    v = load("prg")["hkdf_sha256"]
    okm = derive_seed(bytes.fromhex(v["ikm"]), bytes.fromhex(v["info"]), length=v["length"])
    assert okm.hex() == v["okm"]


def test_prg_words_are_the_keystream() -> None:
    seed = bytes(range(100, 116))
    for count in (0, 1, 3, 1000, 100_003):
        words = prg_uint64(seed, count)
        assert words.dtype == np.uint64 and words.shape == (count,)
        assert words.astype("<u8").tobytes() == prg_bytes(seed, 8 * count)


def test_prg_is_deterministic_and_seed_sensitive() -> None:
    seed = bytes(range(16))
    assert np.array_equal(prg_uint64(seed, 10), prg_uint64(seed, 10))
    assert not np.array_equal(prg_uint64(seed, 10), prg_uint64(bytes(16), 10))
    with pytest.raises(ValueError, match="seed must be 16 bytes, got 15"):
        prg_uint64(bytes(15), 1)


def test_fixed_point_known_answers() -> None:
    v = load("fixedpoint")
    xs = [x for x, _ in v["cases"]]
    assert encode_fixed(xs).tolist() == [int(r) for _, r in v["cases"]]
    assert decode_fixed(encode_fixed(xs)).tolist() == xs


def test_fixed_point_range() -> None:
    with pytest.raises(ValueError, match="finite"):
        encode_fixed([np.inf])
    with pytest.raises(ValueError, match="magnitude below 2\\^46"):
        encode_fixed([2.0**46])


@settings(max_examples=60, deadline=None)
@given(U64, st.integers(2, 6))
def test_split_reconstruct(secret: np.ndarray, n: int) -> None:
    shares = split_additive(secret, n)
    assert len(shares) == n
    assert all(isinstance(s, SeedShare) for s in shares[:-1])
    assert all(len(s.seed) == 16 for s in shares[:-1] if isinstance(s, SeedShare))
    assert np.array_equal(reconstruct_additive(shares), secret)


def test_partial_shares_do_not_reveal() -> None:
    secret = encode_fixed(np.arange(1000.0))
    shares = split_additive(secret, 3)
    partial = reconstruct_additive(shares[:2])
    assert not np.array_equal(partial, secret)
    # the explicit share looks uniform: each bit is set about half the time
    bits = np.unpackbits(shares[-1].expand().view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01


def test_aggregators_add_share_sums() -> None:
    xs = [encode_fixed(np.linspace(-5, 5, 64) * k) for k in range(1, 5)]
    per_node = [split_additive(x, 2) for x in xs]
    agg = [add_shares([s[i] for s in per_node]) for i in range(2)]
    total = decode_fixed(reconstruct_additive(agg))
    np.testing.assert_allclose(total, np.linspace(-5, 5, 64) * 10, atol=1e-4)


def test_bad_shares() -> None:
    with pytest.raises(InvalidShare):
        add_shares([])
    with pytest.raises(InvalidShare):
        add_shares([VectorShare(np.zeros(3, np.uint64)), VectorShare(np.zeros(4, np.uint64))])
    with pytest.raises(InvalidShare):
        SeedShare(b"short", 3).expand()
    with pytest.raises(ValueError, match="at least 2 shares"):
        split_additive(np.zeros(3, np.uint64), 1)
    with pytest.raises(TypeError, match="uint64"):
        split_additive(np.zeros(3), 2)
