"""The FLP of draft-irtf-cfrg-vdaf-20 §7.3 run directly, as the draft's ``run_flp`` (§7.1).

Valid measurements must be accepted for any number of shares; invalid ones (each
circuit's own notion of invalid, proven honestly over the bad encoding), and
valid ones with a tampered proof, must be rejected.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from datafed.hazmat import (
    CountCircuit,
    Field64,
    Field128,
    FlpBBCGGI19,
    HistogramCircuit,
    InvalidShare,
    MultihotCountVecCircuit,
    SumCircuit,
    SumVecCircuit,
    Valid,
    optimal_chunk_length,
)

RNG = random.Random(20260101)


def share(field: Any, vec: list[int], n: int) -> list[list[int]]:
    p = field.MODULUS
    shares = [[RNG.randrange(p) for _ in vec] for _ in range(n - 1)]
    last = (
        [(x - sum(col)) % p for x, col in zip(vec, zip(*shares, strict=True), strict=True)]
        if shares
        else list(vec)
    )
    return [*shares, last]


def run_flp(
    valid: Valid[Any, Any], meas: list[int], num_shares: int, tamper: int | None = None
) -> bool:
    flp = FlpBBCGGI19(valid)
    p = flp.field.MODULUS
    rand = lambda n: [RNG.randrange(p) for _ in range(n)]  # noqa: E731
    joint_rand, prove_rand, query_rand = (
        rand(flp.JOINT_RAND_LEN),
        rand(flp.PROVE_RAND_LEN),
        rand(flp.QUERY_RAND_LEN),
    )
    proof = flp.prove(meas, prove_rand, joint_rand)
    assert len(proof) == flp.PROOF_LEN
    if tamper is not None:
        proof[tamper] = (proof[tamper] + 1) % p
    verifier = [0] * flp.VERIFIER_LEN
    for m, pr in zip(
        share(flp.field, meas, num_shares), share(flp.field, proof, num_shares), strict=True
    ):
        part = flp.query(m, pr, query_rand, joint_rand, num_shares)
        verifier = [(x + y) % p for x, y in zip(verifier, part, strict=True)]
    return flp.decide(verifier)


CASES: list[tuple[str, Valid[Any, Any], Any]] = [
    ("count", CountCircuit(Field64), 1),
    ("sum", SumCircuit(Field64, 100), 77),
    ("sum-pow2", SumCircuit(Field64, 255), 255),
    ("sumvec", SumVecCircuit(Field128, 5, 6, 3), [0, 6, 3, 1, 5]),
    ("histogram", HistogramCircuit(Field128, 11, 3), 7),
    (
        "multihot",
        MultihotCountVecCircuit(Field128, 9, 4, 2),
        [True, False, True, True, False] + [False] * 4,
    ),
]


@pytest.mark.parametrize(("name", "valid", "measurement"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("num_shares", [1, 2, 3])
def test_valid_measurement_is_accepted(
    name: str, valid: Valid[Any, Any], measurement: Any, num_shares: int
) -> None:
    meas = valid.encode(measurement)
    assert (
        valid.eval(
            meas, [RNG.randrange(valid.field.MODULUS) for _ in range(valid.JOINT_RAND_LEN)], 1
        )
        == [0] * valid.EVAL_OUTPUT_LEN
    )
    assert run_flp(valid, meas, num_shares)


@pytest.mark.parametrize(("name", "valid", "measurement"), CASES, ids=[c[0] for c in CASES])
def test_tampered_proof_is_rejected(name: str, valid: Valid[Any, Any], measurement: Any) -> None:
    meas = valid.encode(measurement)
    flp = FlpBBCGGI19(valid)
    for index in range(flp.PROOF_LEN):
        assert not run_flp(valid, meas, 2, tamper=index), index


BAD: list[tuple[str, Valid[Any, Any], list[int]]] = [
    ("count=2", CountCircuit(Field64), [2]),
    ("count=-1", CountCircuit(Field64), [Field64.MODULUS - 1]),
    ("sum-bit=2", SumCircuit(Field64, 100), [1, 0, 2, 0, 0, 0, 0]),
    ("sumvec-bit=2", SumVecCircuit(Field128, 2, 3, 2), [1, 1, 2, 0]),
    ("histogram-two-hot", HistogramCircuit(Field128, 6, 2), [0, 1, 0, 1, 0, 0]),
    ("histogram-zero-hot", HistogramCircuit(Field128, 6, 2), [0] * 6),
    ("histogram-weight-2-as-p-1", HistogramCircuit(Field128, 3, 2), [2, Field128.MODULUS - 1, 0]),
    ("multihot-lies-about-weight", MultihotCountVecCircuit(Field128, 4, 3, 2), [1, 1, 1, 0, 1, 0]),
    ("multihot-over-weight", MultihotCountVecCircuit(Field128, 4, 2, 2), [1, 1, 1, 0, 1, 1]),
]


@pytest.mark.parametrize(("name", "valid", "meas"), BAD, ids=[c[0] for c in BAD])
def test_invalid_measurement_is_rejected(
    name: str, valid: Valid[Any, Any], meas: list[int]
) -> None:
    # The prover proves honestly over a bad encoding (what a malicious client does).
    assert any(
        valid.eval(
            meas, [RNG.randrange(valid.field.MODULUS) for _ in range(valid.JOINT_RAND_LEN)], 1
        )
    )
    for num_shares in (1, 2):
        assert not run_flp(valid, meas, num_shares)


def test_query_aborts_on_a_root_of_unity_test_point() -> None:
    valid = CountCircuit(Field64)
    flp = FlpBBCGGI19(valid)
    proof = flp.prove([1], [3, 4], [])
    # Count: one gadget, wire polynomials on the 2nd roots of unity; t = -1 is one.
    with pytest.raises(InvalidShare):
        flp.query([1], proof, [Field64.MODULUS - 1], [], 1)


def test_encoders_refuse_out_of_range_measurements() -> None:
    with pytest.raises(ValueError):
        CountCircuit(Field64).encode(2)
    with pytest.raises(ValueError):
        SumCircuit(Field64, 10).encode(11)
    with pytest.raises(ValueError):
        SumVecCircuit(Field128, 2, 10, 1).encode([1, 11])
    with pytest.raises(ValueError):
        SumVecCircuit(Field128, 2, 10, 1).encode([1])
    with pytest.raises(ValueError):
        HistogramCircuit(Field128, 4, 2).encode(4)
    with pytest.raises(ValueError):
        MultihotCountVecCircuit(Field128, 4, 2, 2).encode([True, True, True, False])
    with pytest.raises(ValueError):
        MultihotCountVecCircuit(Field128, 4, 5, 2)


def test_sum_encoding_uses_the_draft_weights() -> None:
    # §7.4.2: max 100 -> 7 bits, weights 1,2,4,8,16,32 and 100 - 63 = 37.
    c = SumCircuit(Field64, 100)
    assert c.encode(63) == [1, 1, 1, 1, 1, 1, 0]
    assert c.encode(64) == [1, 1, 0, 1, 1, 0, 1]  # 64 = 27 + 37
    for v in range(101):
        assert c.truncate(c.encode(v)) == [v]


def test_optimal_chunk_length_minimises_the_proof() -> None:
    for meas_len in (1, 2, 10, 100, 1000):
        best = optimal_chunk_length(meas_len)
        lengths = {
            c: FlpBBCGGI19(HistogramCircuit(Field128, meas_len, c)).PROOF_LEN
            for c in range(1, meas_len + 1)
        }
        assert lengths[best] == min(lengths.values())
    assert optimal_chunk_length(100) == 7
    assert optimal_chunk_length(1000) == 33
