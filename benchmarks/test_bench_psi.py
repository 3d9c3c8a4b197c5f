"""Intersection-sum (Private Join and Compute) end to end: ours vs the same protocol on plain ``phe``.

Both run the identical ECDH part (edwards25519 via libsodium); the baseline does the
Paillier part with ``phe``.  ``items/s`` counts one party's set size per second of the
whole protocol (both parties, all rounds, one process).  Plain ``phe`` needs about
10 ms per encryption, so its run is 1,000 × 1,000; ours runs at that size and at
the issue's 100,000 × 100,000 (one round, values encrypted on two cores).
Keys are 2048-bit here to keep the large run near two minutes.
"""

from __future__ import annotations

import secrets

import pytest
from sizes import size

from datafed.hazmat import (
    BatchEncryptor,
    generate_paillier_keypair,
    hash_to_group,
    private_key_to_phe,
    random_scalar,
    scalar_mult,
)
from datafed.protocols import PsiParty1, PsiParty2

BITS = 2048
SMALL = size(1000, 20)
LARGE = size(100_000, 40)


@pytest.fixture(scope="module")
def keypair():  # type: ignore[no-untyped-def]
    pk, sk = generate_paillier_keypair(BITS)
    pk.precompute()
    return pk, sk


def _data(n: int) -> tuple[list[str], list[tuple[str, int]], int]:
    ids1 = [f"id-{i}" for i in range(n)]
    pairs = [(f"id-{i}", i % 1000) for i in range(n // 2, n + n // 2)]
    return ids1, pairs, sum(i % 1000 for i in range(n // 2, n))


def _ours(ids1, pairs, keypair, encryptor=None):  # type: ignore[no-untyped-def]
    p1, p2 = PsiParty1(ids1), PsiParty2(pairs, keypair=keypair, encryptor=encryptor)
    return p1.finish(p2.round4(p1.round3(p2.round2(p1.round1()))))


def _phe_protocol(ids1, pairs, phe_sk):  # type: ignore[no-untyped-def]
    pub, rnd = phe_sk.public_key, secrets.SystemRandom()
    k1, k2 = random_scalar(), random_scalar()
    r1 = [scalar_mult(k1, hash_to_group(v.encode())) for v in ids1]
    rnd.shuffle(r1)
    double = {scalar_mult(k2, p) for p in r1}
    r2 = [(scalar_mult(k2, hash_to_group(w.encode())), pub.encrypt(t)) for w, t in pairs]
    rnd.shuffle(r2)
    matches = [ct for p, ct in r2 if scalar_mult(k1, p) in double]
    mask = secrets.randbelow(pub.max_int // 2)  # phe encodes integers below n/3 only
    total = sum(matches, pub.encrypt(mask))
    return len(matches), phe_sk.decrypt(total) - mask


def test_psi_phe_baseline(benchmark, bench_row, keypair):  # type: ignore[no-untyped-def]
    n = SMALL
    bench_row(
        "psi.intersection_sum",
        role="baseline",
        unit="items/s",
        per_call=n,
        pair="psi",
        params={"items": n, "bits": BITS},
        baseline_name="same protocol on phe, 1k x 1k",
    )
    ids1, pairs, expected = _data(n)
    phe_sk = private_key_to_phe(keypair[1])
    out = benchmark.pedantic(_phe_protocol, args=(ids1, pairs, phe_sk), rounds=1, iterations=1)
    assert out == (n // 2, expected)


def test_psi_ours_small(benchmark, bench_row, keypair):  # type: ignore[no-untyped-def]
    n = SMALL
    bench_row(
        "psi.intersection_sum",
        role="ours",
        unit="items/s",
        per_call=n,
        pair="psi",
        params={"items": n, "bits": BITS, "workers": 1},
        baseline_name="same protocol on phe, 1k x 1k",
    )
    ids1, pairs, expected = _data(n)
    out = benchmark.pedantic(_ours, args=(ids1, pairs, keypair), rounds=3, iterations=1)
    assert (out.intersection_size, out.intersection_sum) == (n // 2, expected)


def test_psi_ours_100k(benchmark, bench_row, keypair):  # type: ignore[no-untyped-def]
    n = LARGE
    bench_row(
        "psi.intersection_sum",
        role="ours",
        unit="items/s",
        per_call=n,
        pair="psi",
        params={"items": n, "bits": BITS, "workers": 2},
        baseline_name="same protocol on phe, 1k x 1k",
    )
    ids1, pairs, expected = _data(n)
    with BatchEncryptor(keypair[0], workers=2) as enc:
        enc.encrypt_many([0, 1])
        out = benchmark.pedantic(_ours, args=(ids1, pairs, keypair, enc), rounds=1, iterations=1)
    assert (out.intersection_size, out.intersection_sum) == (n // 2, expected)
