from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import (
    PRIME,
    InvalidShare,
    ShamirShare,
    shamir_reconstruct,
    shamir_reconstruct_bytes,
    shamir_split,
    shamir_split_bytes,
)
from tests.vectors.hazmat import load


def test_known_answers() -> None:
    for case in load("shamir")["cases"]:
        shares = [ShamirShare(x, (int(y),)) for x, y in case["shares"]]
        t = case["t"]
        for subset in itertools.combinations(shares, t):
            assert shamir_reconstruct(list(subset), t) == [int(case["secret"])]
        assert shamir_reconstruct(shares, t) == [int(case["secret"])]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, PRIME - 1), st.integers(1, 5), st.integers(0, 3), st.randoms())
def test_any_t_of_n(secret: int, t: int, extra: int, rnd: object) -> None:
    n = t + extra
    shares = shamir_split([secret], t, n)
    subset = rnd.sample(shares, t)  # type: ignore[attr-defined]
    assert shamir_reconstruct(subset, t) == [secret]


def test_inconsistent_share_detected() -> None:
    shares = shamir_split([42, 43], 3, 5)
    bad = ShamirShare(shares[4].x, (shares[4].ys[0], (shares[4].ys[1] + 1) % PRIME))
    with pytest.raises(InvalidShare):
        shamir_reconstruct([*shares[:4], bad], 3)
    assert shamir_reconstruct(shares[:3], 3) == [42, 43]


def test_malformed_share_sets() -> None:
    shares = shamir_split([7], 3, 5)
    with pytest.raises(InvalidShare):
        shamir_reconstruct(shares[:2], 3)
    with pytest.raises(InvalidShare):
        shamir_reconstruct([shares[0], shares[0], shares[1]], 3)
    with pytest.raises(InvalidShare):
        shamir_reconstruct([ShamirShare(0, (1,)), *shares[1:3]], 3)
    with pytest.raises(InvalidShare):
        shamir_reconstruct([ShamirShare(1, (PRIME,)), *shares[1:3]], 3)
    with pytest.raises(ValueError, match="1 <= t <= n"):
        shamir_split([1], 4, 3)
    with pytest.raises(ValueError, match="in \\[0, 2\\^127 - 1\\)"):
        shamir_split([PRIME], 2, 3)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=70))
def test_bytes_round_trip(secret: bytes) -> None:
    shares = shamir_split_bytes(secret, 3, 5, xs=[11, 12, 13, 14, 15])
    assert shamir_reconstruct_bytes(shares[1:4], 3) == secret
    assert shamir_reconstruct_bytes(shares, 3) == secret
