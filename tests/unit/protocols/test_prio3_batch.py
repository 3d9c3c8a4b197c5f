"""Batched Prio3 verification equals the scalar path, report by report (valid and invalid)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from datafed.hazmat import Field64, SumVecCircuit
from datafed.protocols import (
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    ReportRejected,
)
from datafed.protocols._prio3_batch import (
    decode_verifier_shares,
    encode_verifier_shares,
    verifier_messages,
    verify_init_batch,
    verify_next_batch,
)

CTX = b"datafed batch test"
KEY = bytes(range(32))

CASES: list[tuple[str, Prio3[Any, Any], Callable[[random.Random], Any]]] = [
    ("count", Prio3Count(), lambda r: r.randrange(2)),
    ("sum", Prio3Sum(255), lambda r: r.randrange(256)),
    ("histogram", Prio3Histogram(10), lambda r: r.randrange(10)),
    ("sumvec", Prio3SumVec(5, 3), lambda r: [r.randrange(4) for _ in range(5)]),
    (
        "multihot",
        Prio3MultihotCountVec(6, 3),
        lambda r: [r.random() < 0.3 for _ in range(3)] + [False] * 3,
    ),
    (  # a long vector: 600 elements, 30 calls of chunks of 20, wire polynomials of 32 points
        "sumvec-long",
        Prio3SumVec(600, 1),
        lambda r: [r.randrange(2) for _ in range(600)],
    ),
    (
        "sumvec-multiproof-field64",
        Prio3(SumVecCircuit(Field64, 3, 1, 2), shares=2, vdaf_id=0xFFFFFFFF, proofs=3),
        lambda r: [r.randrange(2) for _ in range(3)],
    ),
]


def _reports(
    vdaf: Prio3[Any, Any], gen: Callable[[random.Random], Any], n: int
) -> list[tuple[bytes, ...]]:
    rng, out = random.Random(5), []
    for i in range(n):
        nonce = os.urandom(16)
        pub, shares = vdaf.shard(CTX, gen(rng), nonce, os.urandom(vdaf.RAND_SIZE))
        pb = vdaf.encode_public_share(pub)
        s0, s1 = (vdaf.encode_input_share(s) for s in shares)
        kind = i % 6
        if kind == 1:  # a flipped byte in the Leader's share
            s0 = bytes(b ^ (1 if k == rng.randrange(len(s0)) else 0) for k, b in enumerate(s0))
        elif kind == 2:  # in the Helper's seed
            s1 = bytes(b ^ (1 if k == 0 else 0) for k, b in enumerate(s1))
        elif kind == 3:  # a truncated share
            s0 = s0[:-1]
        elif kind == 4 and pb:  # a tampered public share
            pb = bytes(b ^ (1 if k == 3 else 0) for k, b in enumerate(pb))
        elif kind == 5:  # an element above the modulus
            s0 = b"\xff" * vdaf.field.ENCODED_SIZE + s0[vdaf.field.ENCODED_SIZE :]
        out.append((nonce, pb, s0, s1))
    return out


def _scalar(vdaf: Prio3[Any, Any], nonce: bytes, pb: bytes, s0: bytes, s1: bytes) -> Any:
    try:
        pub = vdaf.decode_public_share(pb)
        st0, v0 = vdaf.verify_init(KEY, CTX, 0, nonce, pub, vdaf.decode_input_share(0, s0))
        st1, v1 = vdaf.verify_init(KEY, CTX, 1, nonce, pub, vdaf.decode_input_share(1, s1))
        msg = vdaf.verifier_shares_to_message(CTX, [v0, v1])
        return vdaf.verify_next(CTX, st0, msg), vdaf.verify_next(CTX, st1, msg)
    except ReportRejected:
        return None


@pytest.mark.parametrize(("name", "vdaf", "gen"), CASES, ids=[c[0] for c in CASES])
def test_batch_equals_scalar_report_by_report(name: str, vdaf: Prio3[Any, Any], gen: Any) -> None:
    reps = _reports(vdaf, gen, 36)
    n = len(reps)
    cols = list(zip(*reps, strict=True))
    b0 = verify_init_batch(vdaf, KEY, CTX, 0, cols[0], cols[1], cols[2])
    b1 = verify_init_batch(vdaf, KEY, CTX, 1, cols[0], cols[1], cols[3])
    v0, p0, decoded = decode_verifier_shares(vdaf, encode_verifier_shares(vdaf, b0))
    ok, messages = verifier_messages(vdaf, CTX, [(v0, p0), (b1.verifiers, b1.parts)], n)
    ok &= (
        decoded & b0.ok & b1.ok & verify_next_batch(b0, messages) & verify_next_batch(b1, messages)
    )
    valid = 0
    for j, rep in enumerate(reps):
        expected = _scalar(vdaf, *rep)
        assert bool(ok[j]) == (expected is not None), (name, j)
        if expected is not None:
            valid += 1
            assert list(b0.out_shares[:, j]) == expected[0]
            assert list(b1.out_shares[:, j]) == expected[1]
    assert 0 < valid < n


def test_batch_refuses_caller_errors() -> None:
    vdaf = Prio3Count()
    with pytest.raises(ValueError):
        verify_init_batch(vdaf, b"short", CTX, 0, [], [], [])
    with pytest.raises(ValueError):
        verify_init_batch(vdaf, KEY, CTX, 2, [], [], [])
