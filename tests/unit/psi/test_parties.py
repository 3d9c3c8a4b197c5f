"""The two node roles without the network: exact answers, and every tampered message refused."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from datafed.hazmat import hash_to_group
from datafed.psi import (
    VALUE_BOUND,
    IdsParty,
    InvalidPsiMessage,
    Pool,
    StatementBody,
    exchange,
    sign_statement,
)
from datafed.psi._workers import blind_items, encrypt_values, multiply_points

IDS = [f"P{i:04d}".encode() for i in range(60)]
PAIRS = [(f"P{i:04d}".encode(), (i * 1000 - 7) << 16) for i in range(40, 90)]
WANT_SIZE = 20  # P0040..P0059
WANT_SUM = sum(((i * 1000 - 7) << 16) for i in range(40, 60))
# 2^252 + 27742317777372353535851937790883648493 (RFC 8032 §5.1): a small-order point
# and a non-canonical encoding are both refused by libsodium's scalarmult.
SMALL_ORDER_POINT = bytes([1] + [0] * 31)  # the identity
NON_CANONICAL = bytes([0xFF] * 31 + [0x7F])


def _run(job, psi_pki, ids=IDS, pairs=PAIRS, min_ids=0, min_values=0):
    party = IdsParty(job, ids)
    body, points = party.blind()
    st1 = sign_statement(body, psi_pki.tax.cert, psi_pki.tax.key)
    ebody, sealed = exchange(job, pairs, body, st1.digest, points, min_intersection=min_values)
    return party, st1, ebody, sealed, party.intersect(ebody, st1.digest, sealed, min_ids)


def test_size_and_sum_are_exact(job, psi_pki, analyst_keys) -> None:
    pk, sk = analyst_keys
    *_, (size, enc) = _run(job, psi_pki)
    assert size == WANT_SIZE
    assert sk.decrypt_signed(pk.ciphertext_from_bytes(enc)) == WANT_SUM


def test_negative_values_and_empty_intersection(job, psi_pki, analyst_keys) -> None:
    pk, sk = analyst_keys
    pairs = [(b"P0001", -5 << 16), (b"P0002", -(VALUE_BOUND - 1)), (b"nobody", 9)]
    *_, (size, enc) = _run(job, psi_pki, pairs=pairs)
    assert (size, sk.decrypt_signed(pk.ciphertext_from_bytes(enc))) == (
        2,
        -(5 << 16) - VALUE_BOUND + 1,
    )
    *_, (size, enc) = _run(job, psi_pki, pairs=[(b"nobody", 9)])
    assert (size, sk.decrypt_signed(pk.ciphertext_from_bytes(enc))) == (0, 0)


def test_the_sum_is_rerandomized(job, psi_pki) -> None:
    *_, (_, a) = _run(job, psi_pki)
    *_, (_, b) = _run(job, psi_pki)
    assert a != b


def test_blinded_points_hide_the_identifiers(job) -> None:
    _, points = IdsParty(job, IDS).blind()
    chunks = {points[i : i + 32] for i in range(0, len(points), 32)}
    assert len(chunks) == len(IDS)
    assert not chunks & {hash_to_group(i) for i in IDS}
    assert all(i not in points for i in IDS)


def test_the_sealed_box_opens_only_for_the_ids_node(job, psi_pki) -> None:
    *_, sealed, _ = _run(job, psi_pki)
    with pytest.raises(CryptoError):
        SealedBox(PrivateKey.generate()).decrypt(sealed)


@pytest.mark.parametrize(("min_ids", "min_values"), [(21, 0), (0, 21)])
def test_the_larger_minimum_intersection_applies(job, psi_pki, min_ids, min_values) -> None:
    with pytest.raises(PermissionError, match="fewer than 21 identifiers; no sum is released"):
        _run(job, psi_pki, min_ids=min_ids, min_values=min_values)


def _blinded(job, psi_pki):
    party = IdsParty(job, IDS)
    body, points = party.blind()
    return party, body, sign_statement(body, psi_pki.tax.cert, psi_pki.tax.key).digest, points


@pytest.mark.parametrize(
    "tamper",
    [
        "flipped point byte",
        "dropped point",
        "duplicate point",
        "small-order point",
        "non-canonical point",
        "other job",
        "no recipient key",
    ],
)
def test_exchange_refuses_tampered_points(job, psi_pki, tamper) -> None:
    _, body, digest, points = _blinded(job, psi_pki)
    if tamper == "flipped point byte":
        points = bytes([points[0] ^ 1]) + points[1:]
    elif tamper == "dropped point":
        points = points[32:]
    elif tamper in ("duplicate point", "small-order point", "non-canonical point"):
        bad = {"duplicate point": points[32:64], "small-order point": SMALL_ORDER_POINT}
        points = bad.get(tamper, NON_CANONICAL) + points[32:]
        # a peer that signs bad points (a faulty ids node): the digest matches
        body = dataclasses.replace(body, payload_digest=hashlib.sha256(points).digest())
    elif tamper == "other job":
        body = dataclasses.replace(body, job_digest=bytes(32))
    else:
        body = dataclasses.replace(body, recipient_key=b"")
    with pytest.raises(InvalidPsiMessage):
        exchange(job, PAIRS, body, digest, points, min_intersection=0)


def test_exchange_refuses_bad_own_data(job, psi_pki) -> None:
    _, body, digest, points = _blinded(job, psi_pki)
    with pytest.raises(ValueError, match="identifiers on the values side must be distinct"):
        exchange(job, [(b"a", 1), (b"a", 2)], body, digest, points, min_intersection=0)
    with pytest.raises(ValueError, match=r"\|value\| < 2\^64"):
        exchange(job, [(b"a", VALUE_BOUND)], body, digest, points, min_intersection=0)


@pytest.mark.parametrize(
    "tamper", ["flipped sealed byte", "truncated", "other blind", "wrong count", "other job"]
)
def test_intersect_refuses_tampered_boxes(job, psi_pki, tamper) -> None:
    party, body, digest, points = _blinded(job, psi_pki)
    ebody, sealed = exchange(job, PAIRS, body, digest, points, min_intersection=0)
    if tamper == "flipped sealed byte":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
        ebody = dataclasses.replace(ebody, payload_digest=hashlib.sha256(sealed).digest())
    elif tamper == "truncated":
        sealed = sealed[:-1]
    elif tamper == "other blind":
        digest = bytes(32)
    elif tamper == "wrong count":
        ebody = dataclasses.replace(ebody, pairs=ebody.pairs - 1)
    else:
        ebody = dataclasses.replace(ebody, job_digest=bytes(32))
    with pytest.raises(InvalidPsiMessage):
        party.intersect(ebody, digest, sealed, 0)


def test_a_box_sealed_for_another_job_does_not_open(job, psi_pki) -> None:
    """The analyst cannot replay an earlier job's box: each job has its own X25519 key."""
    party_a, _, digest_a, _ = _blinded(job, psi_pki)
    _, body_b, digest_b, points_b = _blinded(job, psi_pki)
    ebody_b, sealed_b = exchange(job, PAIRS, body_b, digest_b, points_b, min_intersection=0)
    with pytest.raises(InvalidPsiMessage):
        party_a.intersect(dataclasses.replace(ebody_b, peer_digest=digest_a), digest_a, sealed_b, 0)


def test_steps_run_once(job) -> None:
    party = IdsParty(job, IDS)
    party.blind()
    with pytest.raises(RuntimeError, match="already blinded"):
        party.blind()
    fresh = IdsParty(job, IDS)
    with pytest.raises(InvalidPsiMessage):
        fresh.intersect(
            StatementBody("city-bank", job.job_id, job.digest(), "exchange", 60, b""), b"", b"", 0
        )


def test_the_pool_gives_the_inline_answers(analyst_keys) -> None:
    pool = Pool(2, threshold=4, chunk=32)
    try:
        key = bytes([7]) + bytes(31)
        items = [f"id-{i}".encode() for i in range(100)]
        inline = blind_items(Pool(1), key, items)
        assert blind_items(pool, key, items) == inline
        assert multiply_points(pool, key, inline) == multiply_points(Pool(1), key, inline)
        with pytest.raises(InvalidPsiMessage):
            multiply_points(pool, key, inline[:-32] + NON_CANONICAL)
        pk, sk = analyst_keys
        cts = encrypt_values(pool, pk, list(range(-20, 20)))
        assert [sk.decrypt_signed(pk.ciphertext_from_bytes(c)) for c in cts] == list(range(-20, 20))
    finally:
        pool.close()
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        Pool(0)
    with pytest.raises(ValueError, match="multiple of 32 bytes"):
        multiply_points(Pool(1), key, b"x" * 33)
