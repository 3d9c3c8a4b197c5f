"""Intersection-sum under differential privacy without the network: clamp, state, noise."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datafed.psi import (
    DpNoise,
    IdsParty,
    InvalidPsiMessage,
    StatementBody,
    clamp_pairs,
    exchange,
    fixed_bound,
    sign_statement,
)

IDS = [f"P{i:04d}".encode() for i in range(30)]
PAIRS = [(f"P{i:04d}".encode(), i << 16) for i in range(20, 40)]  # P0020..P0029 match
BODY = StatementBody(
    node="city-bank",
    job_id="j1",
    job_digest=b"\x01" * 32,
    step="exchange",
    count=3,
    payload_digest=b"\x02" * 32,
    pairs=2,
    peer_digest=b"\x03" * 32,
    min_intersection=5,
)


def test_a_body_without_dp_encodes_as_before_and_one_with_dp_round_trips() -> None:
    with_dp = dataclasses.replace(BODY, dp_sensitivity=65536 * 100, dp_epsilon="0.5")
    assert with_dp.encode().startswith(BODY.encode())
    assert len(with_dp.encode()) == len(BODY.encode()) + 8 + 4 + 3
    assert StatementBody.decode(BODY.encode()) == BODY
    assert StatementBody.decode(with_dp.encode()) == with_dp
    # a trailer with a zero bound, or a truncated one, is malformed
    zero = BODY.encode() + (0).to_bytes(8, "big") + (3).to_bytes(4, "big") + b"0.5"
    for bad in (zero, with_dp.encode()[:-1], with_dp.encode() + b"\x00"):
        with pytest.raises(InvalidPsiMessage):
            StatementBody.decode(bad)


def test_fixed_bound_and_clamp() -> None:
    assert fixed_bound((-3.0, 2.0), 16) == 3 << 16
    assert fixed_bound((0.0, 0.0), 16) == 1  # never a zero sensitivity
    pairs = [(b"a", -10 << 16), (b"b", 1 << 16), (b"c", 10 << 16)]
    assert clamp_pairs(pairs, (-3.0, 2.0), 16) == [
        (b"a", -3 << 16),
        (b"b", 1 << 16),
        (b"c", 2 << 16),
    ]


@given(st.lists(st.integers(-(2**40), 2**40), max_size=20), st.floats(0, 1e6), st.floats(0, 1e6))
def test_clamped_values_stay_within_the_sensitivity(values, a, b) -> None:
    bounds = (-a, b)
    s = fixed_bound(bounds, 16)
    assert all(abs(t) <= s for _, t in clamp_pairs([(b"x", v) for v in values], bounds, 16))


def test_noise_scales_and_stddevs() -> None:
    noise = DpNoise("1/2", 100 << 16)
    assert noise.sum_scale == Fraction(100 << 16) * 4  # epsilon/2 = 1/4 on the sum
    assert noise.size_scale == 4
    sd_sum, sd_size = noise.stddevs(16)
    assert sd_sum == pytest.approx(math.sqrt(2) * 400)
    assert sd_size == pytest.approx(math.sqrt(2) * 4)
    draws = [noise.draw() for _ in range(50)]
    assert len({d[1] for d in draws}) > 1  # it is random
    with pytest.raises(ValueError, match="sensitivity must be positive, got 0"):
        DpNoise("1", 0)
    with pytest.raises(ValueError, match="epsilon must be positive, got 0"):
        DpNoise("0", 1)


def test_the_values_node_states_its_bound_and_the_noise_lands_in_the_sum(
    job, psi_pki, analyst_keys
) -> None:
    pk, sk = analyst_keys
    party = IdsParty(job, IDS)
    body, points = party.blind()
    st1 = sign_statement(body, psi_pki.tax.cert, psi_pki.tax.key)
    ebody, sealed = exchange(
        job, PAIRS, body, st1.digest, points, min_intersection=0, dp_sensitivity=7, dp_epsilon="1.0"
    )
    assert (ebody.dp_sensitivity, ebody.dp_epsilon) == (7, "1.0")
    assert StatementBody.decode(ebody.encode()) == ebody
    size, enc = party.intersect(ebody, st1.digest, sealed, 0, sum_noise=-12345)
    assert size == 10
    assert sk.decrypt_signed(pk.ciphertext_from_bytes(enc)) == sum(range(20, 30)) * 65536 - 12345
