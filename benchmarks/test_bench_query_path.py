"""Paillier encryption through the node's protect path vs plain ``phe``, same run, same key."""

from __future__ import annotations

import phe
import pytest

from datafed.query.protection import PaillierSession, ProtectionSpec, protect

VALUES = list(range(-16, 16))


@pytest.fixture(scope="module")
def session() -> PaillierSession:
    return PaillierSession(2048)


def test_paillier_encrypt_query_path(benchmark, bench_row, session):
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="ops/s",
        per_call=len(VALUES),
        params={"bits": 2048, "path": "query.protect"},
        baseline_name="phe.encrypt",
    )
    spec = ProtectionSpec(mode="paillier", fixed_point_bits=16, paillier_n=session.n)
    out = benchmark.pedantic(protect, args=(spec, VALUES), rounds=5, iterations=1)
    assert session.decrypt(out) == VALUES


def test_paillier_encrypt_phe_baseline(benchmark, bench_row, session):
    bench_row(
        "paillier.encrypt",
        role="baseline",
        unit="ops/s",
        per_call=len(VALUES),
        params={"bits": 2048, "path": "query.protect"},
        baseline_name="phe.encrypt",
    )
    pub = phe.PaillierPublicKey(session.n)
    out = benchmark.pedantic(lambda: [pub.encrypt(v) for v in VALUES], rounds=5, iterations=1)
    assert len(out) == len(VALUES)
