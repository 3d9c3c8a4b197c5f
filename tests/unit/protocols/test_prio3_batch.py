"""Batched Prio3 verification equals the scalar path, report by report (valid and invalid)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from datafed.hazmat import (
    Field64,
    Field128,
    LazyRows,
    SumVecCircuit,
    decode_words,
    ints_of_words,
    words_below,
)
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
    aggregate_out_shares,
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
    if vdaf.field is Field128:  # the limb query never decoded the measurement
        for b in (b0, b1):
            assert isinstance(b.meas, LazyRows) and b.meas._rows is None
    aggs = [aggregate_out_shares(vdaf, b, ok) for b in (b0, b1)]
    if name in ("histogram", "multihot", "sumvec-long"):  # output = (a prefix of) the input
        for b in (b0, b1):  # summed on words: still not decoded
            assert b.out_words is not None and b.meas._rows is None  # type: ignore[attr-defined]
    valid, want = 0, [vdaf.agg_init(), vdaf.agg_init()]
    for j, rep in enumerate(reps):
        expected = _scalar(vdaf, *rep)
        assert bool(ok[j]) == (expected is not None), (name, j)
        if expected is not None:
            valid += 1
            assert list(b0.out_shares[:, j]) == expected[0]
            assert list(b1.out_shares[:, j]) == expected[1]
            want = [vdaf.agg_update(want[i], expected[i]) for i in range(2)]
    assert 0 < valid < n
    assert aggs == want
    # Every report, the malformed ones included (an element above the modulus sums as read).
    every = np.ones(n, dtype=bool)
    for b in (b0, b1):
        p = vdaf.field.MODULUS
        assert aggregate_out_shares(vdaf, b, every) == [
            int(x) % p for x in b.out_shares.sum(axis=1)
        ]


def test_batch_refuses_caller_errors() -> None:
    vdaf = Prio3Count()
    with pytest.raises(ValueError):
        verify_init_batch(vdaf, b"short", CTX, 0, [], [], [])
    with pytest.raises(ValueError):
        verify_init_batch(vdaf, KEY, CTX, 2, [], [], [])


def test_words_decode_and_range_check() -> None:
    p = Field128.MODULUS
    vals = [0, 1, p - 1, p, 2**128 - 1, 2**64, 2**64 - 1]
    data = b"".join(v.to_bytes(16, "little") for v in vals)
    words = decode_words(data, len(vals), 1)  # seven reports of one element
    assert words_below(Field128, words).tolist() == [True, True, True, False, False, True, True]
    assert ints_of_words(words)[0].tolist() == vals
    rows = LazyRows(words)
    assert rows._rows is None and len(rows) == 1
    assert list(rows[0]) == vals and list(rows[-1]) == vals
    assert rows._rows is None and list(rows._row) == [0]  # that row only
    assert isinstance(rows[0:1], LazyRows) and len(rows[1:]) == 0
    with pytest.raises(IndexError):
        rows[1]
    assert [list(r) for r in rows] == [vals] and rows._rows is not None


@pytest.mark.parametrize(("name", "vdaf", "gen"), CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_an_empty_batch(name: str, vdaf: Prio3[Any, Any], gen: Any) -> None:
    for agg in (0, 1):
        init = verify_init_batch(vdaf, KEY, CTX, agg, [], [], [])
        assert init.n == 0 and init.verifiers.shape[1] == 0
        assert aggregate_out_shares(vdaf, init, init.ok) == vdaf.agg_init()
