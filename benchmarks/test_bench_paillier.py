"""Paillier: ours (DJN fixed-base, CRT, packing, 2 cores) vs plain ``phe``, same keys, same run.

Rows: ``paillier.encrypt`` (ciphertexts/s), ``paillier.encrypt_packed`` (values/s,
64-bit values with headroom for 1,024 additions), ``paillier.decrypt`` (ops/s),
at 2048 and 3072 bits.  Fixed-base tables and worker pools are built before timing
(one-time per key: about 0.2 s at 2048 bits).
"""

from __future__ import annotations

import random

import phe
import pytest
from sizes import SMOKE, size

from datafed.hazmat import (
    BatchEncryptor,
    Packer,
    PaillierPublicKey,
    generate_paillier_keypair,
    private_key_to_phe,
)

BITS = [2048] if SMOKE else [2048, 3072]
PHE_OPS = {2048: size(24, 2), 3072: 8}  # plain phe is slow: keep its rounds short


@pytest.fixture(scope="module", params=BITS, ids=lambda b: f"{b}bit")
def keys(request):  # type: ignore[no-untyped-def]
    pk, sk = generate_paillier_keypair(request.param)
    pk.precompute()
    strict = PaillierPublicKey(pk.n, strict=True)
    strict.precompute()
    return pk, sk, private_key_to_phe(sk), strict


def _pair(bits: int, row: str) -> str:
    return f"{row}|{bits}"


def test_encrypt_phe(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, _, phe_sk, _ = keys
    n = PHE_OPS[pk.bits]
    bench_row(
        "paillier.encrypt",
        role="baseline",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits},
        baseline_name="phe",
        pair=_pair(pk.bits, "enc"),
    )
    pub = phe_sk.public_key
    benchmark.pedantic(lambda: [pub.encrypt(v) for v in range(n)], rounds=3, iterations=1)


def test_encrypt_ours(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, sk, _, _ = keys
    n = size(256, 4)
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits, "mode": "djn", "workers": 1},
        baseline_name="phe",
        pair=_pair(pk.bits, "enc"),
    )
    out = benchmark.pedantic(pk.encrypt_many, args=(range(n),), rounds=3, iterations=1)
    assert sk.decrypt(out[-1]) == n - 1


def test_encrypt_ours_strict(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, sk, _, strict = keys
    n = size(128, 4)
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits, "mode": "strict", "workers": 1},
        baseline_name="phe",
        pair=_pair(pk.bits, "enc"),
    )
    out = benchmark.pedantic(strict.encrypt_many, args=(range(n),), rounds=3, iterations=1)
    assert sk.decrypt(out[-1]) == n - 1


def test_encrypt_ours_two_cores(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, sk, _, _ = keys
    n = size(1024, 4)
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits, "mode": "djn", "workers": 2},
        baseline_name="phe",
        pair=_pair(pk.bits, "enc"),
    )
    with BatchEncryptor(pk, workers=2) as enc:
        enc.encrypt_many([0, 1])  # start the workers and build their tables
        out = benchmark.pedantic(enc.encrypt_many, args=(list(range(n)),), rounds=3, iterations=1)
    assert sk.decrypt(out[-1]) == n - 1


def _values(count: int) -> list[int]:
    rng = random.Random(1)
    return [rng.randrange(-(2**63), 2**63) for _ in range(count)]


def test_encrypt_packed_phe(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, _, phe_sk, _ = keys
    n = PHE_OPS[pk.bits]
    values = _values(n)
    bench_row(
        "paillier.encrypt_packed",
        role="baseline",
        unit="values/s",
        per_call=n,
        params={"bits": pk.bits},
        baseline_name="phe (one value per ciphertext)",
        pair=_pair(pk.bits, "packed"),
    )
    pub = phe_sk.public_key
    benchmark.pedantic(lambda: [pub.encrypt(v) for v in values], rounds=3, iterations=1)


@pytest.mark.parametrize("workers", [1, 2])
def test_encrypt_packed_ours(benchmark, bench_row, keys, workers):  # type: ignore[no-untyped-def]
    pk, sk, _, _ = keys
    packer = Packer(modulus_bits=pk.bits, value_bits=64, max_additions=1024)
    n = packer.slots * size(64 if workers == 1 else 256, 1)
    values = _values(n)
    bench_row(
        "paillier.encrypt_packed",
        role="ours",
        unit="values/s",
        per_call=n,
        params={
            "bits": pk.bits,
            "value_bits": 64,
            "max_additions": 1024,
            "slots": packer.slots,
            "workers": workers,
        },
        baseline_name="phe (one value per ciphertext)",
        pair=_pair(pk.bits, "packed"),
    )
    if workers == 1:
        out = benchmark.pedantic(
            lambda: pk.encrypt_many(packer.pack(values)), rounds=3, iterations=1
        )
    else:
        with BatchEncryptor(pk, workers=2) as enc:
            enc.encrypt_many([0, 1])
            out = benchmark.pedantic(
                lambda: enc.encrypt_many(packer.pack(values)), rounds=3, iterations=1
            )
    assert packer.unpack(sk.decrypt_many(out[:1]), count=packer.slots) == values[: packer.slots]


def test_decrypt_phe(benchmark, bench_row, keys):  # type: ignore[no-untyped-def]
    pk, _, phe_sk, _ = keys
    n = size(64, 4)
    cts = [phe.EncryptedNumber(phe_sk.public_key, int(c.value)) for c in pk.encrypt_many(range(n))]
    bench_row(
        "paillier.decrypt",
        role="baseline",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits},
        baseline_name="phe",
        pair=_pair(pk.bits, "dec"),
    )
    out = benchmark.pedantic(lambda: [phe_sk.decrypt(c) for c in cts], rounds=3, iterations=1)
    assert out == list(range(n))


@pytest.mark.parametrize("threads", [1, 2])
def test_decrypt_ours(benchmark, bench_row, keys, threads):  # type: ignore[no-untyped-def]
    pk, sk, _, _ = keys
    n = size(64, 4)
    cts = pk.encrypt_many(range(n))
    bench_row(
        "paillier.decrypt",
        role="ours",
        unit="ops/s",
        per_call=n,
        params={"bits": pk.bits, "threads": threads},
        baseline_name="phe",
        pair=_pair(pk.bits, "dec"),
    )
    out = benchmark.pedantic(lambda: sk.decrypt_many(cts, threads=threads), rounds=3, iterations=1)
    assert out == list(range(n))
