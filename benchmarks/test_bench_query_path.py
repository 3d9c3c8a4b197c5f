"""Paillier encryption through the node's protect path vs plain ``phe``, same run, same key."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.query.components import Component
from datafed.query.modes import NodeEnv, PaillierMode

VALUES = list(range(-16, 16))
PARAMS = {"bits": 2048, "path": "query.protect"}


@pytest.fixture(scope="module")
def mode() -> tuple[PaillierMode, bytes]:
    m = PaillierMode(2048)
    return m, asyncio.run(m.params())


def test_paillier_encrypt_query_path(benchmark, bench_row, mode):
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="ops/s",
        per_call=len(VALUES),
        params=PARAMS,
        baseline_name="phe.encrypt",
    )
    m, params = mode
    env = NodeEnv("bench", "job", ed25519.Ed25519PrivateKey.generate(), b"")
    payload = benchmark.pedantic(
        PaillierMode.protect, args=(env, params, VALUES), rounds=5, iterations=1
    )
    comps = [Component("sum", "x")]
    assert m.combine([payload], comps, len(VALUES)) == VALUES


def test_paillier_encrypt_phe_baseline(benchmark, bench_row, mode):
    bench_row(
        "paillier.encrypt",
        role="baseline",
        unit="ops/s",
        per_call=len(VALUES),
        params=PARAMS,
        baseline_name="phe.encrypt",
    )
    m, _ = mode
    pub = m._keys[0]
    out = benchmark.pedantic(lambda: [pub.encrypt(v) for v in VALUES], rounds=5, iterations=1)
    assert len(out) == len(VALUES)
