"""A node's Paillier protect path (pack + pairwise masks + DJN encryption) vs plain ``phe``.

Same analyst key, same values, same run: values/s through ``PaillierMode.protect`` (the key
already cached at the node, as from an analyst's second query on) against ``phe``
encrypting each value on its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from datafed import pki
from datafed.hazmat import public_key_to_phe
from datafed.modes import ModeContext, NodeEnv, PaillierMode

VALUES = list(range(-128, 128))
NODES = ("n1", "n2", "n3")
PARAMS = {"bits": 2048, "path": "query.protect", "values": len(VALUES)}


def node_env(d: Path, values: list[int]) -> tuple[PaillierMode, bytes, NodeEnv]:
    """One analyst key and node ``n1``'s environment (a fresh CA in ``d``), the key cached.

    Also what ``benchmarks/profile_query.py`` times a node's protect step with.
    """
    pki.init_ca(d)
    files = {n: pki.issue(d, "node", n) for n in NODES}
    ca = (d / "ca.crt").read_bytes()
    mode = PaillierMode(2048)
    certs = {n: f.cert.read_bytes() for n, f in files.items()}
    params = asyncio.run(mode.params(ModeContext("bench", NODES, certs)))
    env = NodeEnv(
        "n1",
        "bench",
        pki.load_signing_key(files["n1"].signing_key),
        ca,
        binding="00" * 32,
        roster=NODES,
        requester="alice",
    )
    for _ in range(2):  # the node caches the analyst's key on its second use: before timing
        PaillierMode.protect(env, params, values)
    return mode, params, env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return node_env(tmp_path_factory.mktemp("pki"), VALUES)


def test_paillier_protect_query_path(benchmark, bench_row, setup):
    bench_row(
        "paillier.encrypt",
        role="ours",
        unit="values/s",
        per_call=len(VALUES),
        params=PARAMS,
        baseline_name="phe.encrypt",
    )
    _, params, env = setup
    payload = benchmark.pedantic(
        PaillierMode.protect, args=(env, params, VALUES), rounds=5, iterations=1
    )
    assert len(payload) > 0


def test_paillier_encrypt_phe_baseline(benchmark, bench_row, setup):
    bench_row(
        "paillier.encrypt",
        role="baseline",
        unit="values/s",
        per_call=len(VALUES),
        params=PARAMS,
        baseline_name="phe.encrypt",
    )
    mode, _, _ = setup
    pub = public_key_to_phe(mode._keys[0])
    out = benchmark.pedantic(lambda: [pub.encrypt(v) for v in VALUES], rounds=2, iterations=1)
    assert len(out) == len(VALUES)
