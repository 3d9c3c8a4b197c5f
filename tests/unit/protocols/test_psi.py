from __future__ import annotations

import pytest

from datafed.hazmat import (
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
    random_scalar,
    scalar_mult,
)
from datafed.protocols import (
    InvalidMessage,
    PsiParty1,
    PsiParty2,
    PsiRound1,
    PsiRound2,
    PsiRound3,
    RoundError,
)


@pytest.fixture(scope="module")
def keypair() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_paillier_keypair(2048)


def _run(ids1: list[str], pairs: list[tuple[str, int]], keypair) -> tuple:  # type: ignore[no-untyped-def]
    p1, p2 = PsiParty1(ids1), PsiParty2(pairs, keypair=keypair)
    r1 = p1.round1()
    r2 = p2.round2(r1)
    r3 = p1.round3(r2)
    r4 = p2.round4(r3)
    return p1.finish(r4), p2, (r1, r2, r3, r4)


def test_intersection_sum(keypair) -> None:  # type: ignore[no-untyped-def]
    ids1 = [f"person-{i}" for i in range(0, 60)] + ["person-3"]  # duplicate counts once
    pairs = [(f"person-{i}", i * 10 - 200) for i in range(40, 100)]
    result, p2, (r1, r2, _r3, r4) = _run(ids1, pairs, keypair)
    expected = sum(i * 10 - 200 for i in range(40, 60))
    assert result.intersection_size == 20 and result.intersection_sum == expected
    assert p2.intersection_size == 20
    assert r4.masked_sum != expected  # party 2 saw only S + r
    assert len(r1.blinded) == 60 and len(r2.pairs) == 60
    # nothing party 2 received contains a hash of party 1's ids in the clear
    assert not set(r1.blinded) & {p for p, _ in r2.pairs}


def test_empty_intersection(keypair) -> None:  # type: ignore[no-untyped-def]
    result, p2, _ = _run(["a", "b"], [("c", 5), ("d", 6)], keypair)
    assert (result.intersection_size, result.intersection_sum) == (0, 0)
    assert p2.intersection_size == 0


def test_invalid_points_rejected(keypair) -> None:  # type: ignore[no-untyped-def]
    p2 = PsiParty2([("x", 1)], keypair=keypair)
    with pytest.raises(InvalidMessage):
        p2.round2(PsiRound1((bytes([1]) + bytes(31),)))  # the identity
    p1 = PsiParty1(["x"])
    r1 = p1.round1()
    good = PsiParty2([("x", 1)], keypair=keypair).round2(r1)
    bad = PsiRound2(good.double_blinded, ((b"\x00" * 32, good.pairs[0][1]),), good.paillier_n)
    with pytest.raises(InvalidMessage):
        p1.round3(bad)


def test_malformed_round2(keypair) -> None:  # type: ignore[no-untyped-def]
    p1 = PsiParty1(["x", "y"])
    r1 = p1.round1()
    good = PsiParty2([("x", 1)], keypair=keypair).round2(r1)
    with pytest.raises(InvalidMessage):
        p1.round3(PsiRound2(good.double_blinded[:1], good.pairs, good.paillier_n))
    p1b = PsiParty1(["x"])
    r1b = p1b.round1()
    good_b = PsiParty2([("x", 1)], keypair=keypair).round2(r1b)
    with pytest.raises(InvalidMessage):  # a 1024-bit Paillier key is refused
        p1b.round3(PsiRound2(good_b.double_blinded, good_b.pairs, 2**1023 + 1))


def test_round_order_and_inputs(keypair) -> None:  # type: ignore[no-untyped-def]
    p1 = PsiParty1(["x"])
    with pytest.raises(RoundError):
        p1.finish(None)  # type: ignore[arg-type]
    p2 = PsiParty2([("x", 1)], keypair=keypair)
    with pytest.raises(RoundError):
        p2.round4(PsiRound3(b"", 0))
    with pytest.raises(ValueError, match="distinct"):
        PsiParty2([("x", 1), ("x", 2)], keypair=keypair)
    with pytest.raises(ValueError, match="2\\^64"):
        PsiParty2([("x", 2**64)], keypair=keypair)
    with pytest.raises(TypeError):
        PsiParty1([1])  # type: ignore[list-item]
    assert scalar_mult(random_scalar(), p1.round1().blinded[0])
