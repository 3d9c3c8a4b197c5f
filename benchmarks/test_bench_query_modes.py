"""Query latency per protection mode vs ``plain``: SUM + COUNT in 100 groups, 3 nodes.

Three real node processes on loopback with mTLS, each over its own SQLite table of
``DATAFED_BENCH_QUERY_ROWS`` rows (default 1,000,000, the issue's size).  Each row
``query.<mode>`` pairs with ``query.plain`` from the same run (docs/bench.md); ``ratio`` is
plain's latency over the mode's, so 1.0 means "as fast as plain".
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from datafed.client import Federation
from datafed.local import LocalFederation, NodeSpec

ROWS = int(os.environ.get("DATAFED_BENCH_QUERY_ROWS", "1000000"))
GROUPS = 100
NODES = ("meter-north", "meter-east", "meter-south")
PURPOSE = "benchmark"
SQL = "SELECT zone, SUM(usage), COUNT(*) FROM readings GROUP BY zone"
PARAMS = {"rows_per_node": ROWS, "groups": GROUPS, "nodes": len(NODES), "tls": True}
#: The modes measured against ``query.plain`` (paillier: 2048-bit key, packed, masked).
MODES = ("paillier", "shares", "secagg", "ckks")
ROUNDS = 5


def _rows(seed: int) -> Iterator[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    zones = rng.integers(0, GROUPS, ROWS).tolist()
    usage = np.round(rng.gamma(2.0, 20.0, ROWS), 3).tolist()
    return zip(zones, usage, strict=True)


def _policy() -> str:
    zones = ", ".join(str(z) for z in range(GROUPS))
    return (
        'allowed_requesters = ["alice"]\n'
        f'allowed_purposes = ["{PURPOSE}"]\n'
        'allowed_aggregates = ["sum", "count"]\n'
        'allowed_protections = ["plain", "paillier", "shares", "secagg", "ckks"]\n'
        "min_group_size = 1\n"
        "[datasets.policy.group_domains]\n"
        f"zone = [{zones}]\n"
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    specs = [
        NodeSpec(
            name=name,
            agency=f"{name} metering office",
            datasets=[("readings", (("zone", "INTEGER"), ("usage", "REAL")), _rows(i))],  # type: ignore[list-item]
            policy_toml=_policy(),
        )
        for i, name in enumerate(NODES)
    ]
    local = LocalFederation.create(tmp_path_factory.mktemp("bench-modes"), specs)
    local.timeout_s = 300.0
    local.start()
    try:
        client = Federation.from_file(local.fed_toml)
        client.query(SQL, purpose=PURPOSE, protection="plain")  # warm the page cache
        yield client
    finally:
        local.stop()


def _run(client: Federation, mode: str) -> list[tuple]:
    result = client.query(SQL, purpose=PURPOSE, protection=mode)
    return [tuple(r) for r in result.rows]


def test_query_plain(benchmark, bench_row, fed):
    bench_row(
        "query.plain",
        role="both",
        unit="s",
        params=PARAMS,
        pair="query",
        baseline_name="query.plain",
    )
    rows = benchmark.pedantic(_run, args=(fed, "plain"), rounds=ROUNDS, iterations=1)
    assert len(rows) == GROUPS and sum(r[2] for r in rows) == ROWS * len(NODES)


@pytest.mark.parametrize("mode", MODES)
def test_query_mode(benchmark, bench_row, fed, mode):
    bench_row(
        f"query.{mode}",
        role="ours",
        unit="s",
        params=PARAMS,
        pair="query",
        baseline_name="query.plain",
    )
    rows = benchmark.pedantic(_run, args=(fed, mode), rounds=ROUNDS, iterations=1)
    plain = _run(fed, "plain")
    assert [r[0] for r in rows] == [r[0] for r in plain]
    assert [r[2] for r in rows] == [r[2] for r in plain]  # counts exact in every mode
    tolerance = 0.05 if mode == "ckks" else 0.0
    assert all(abs(a[1] - b[1]) <= tolerance for a, b in zip(rows, plain, strict=True))
