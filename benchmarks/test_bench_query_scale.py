"""Query latency per protection mode as rows and nodes grow, beside ``plain`` at each size.

The same query as ``benchmarks/test_bench_query_modes.py`` (SUM + COUNT in 100 zones,
real node processes on loopback with mTLS), at more rows per node and more nodes; every
size is its own pair: ``query.<mode>`` against ``query.plain`` of the same federation,
same run, so ``ratio`` (plain's latency over the mode's) shows whether protection costs
more as the data grows (it should not: the nodes protect per group, not per row) and
how it grows with the nodes (secagg's pairwise masks and key shares grow with n²).

- rows: ``DATAFED_BENCH_QUERY_SCALE_ROWS`` per node (default 10,000,000 and 100,000,000)
  on DuckDB, three nodes; and Spark ``local[2]`` (every node its own driver) at the
  largest (``DATAFED_BENCH_QUERY_SCALE_SPARK=0`` leaves Spark out);
- nodes: ``DATAFED_BENCH_QUERY_SCALE_NODES`` (default 10 and 30) node processes on this
  machine, 1,000,000 rows each on DuckDB.

One federation runs at a time (stopped before the next starts); warm-up and pause as in
``test_bench_query_modes.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_data import COLUMNS, duckdb_file, readings_parquet
from sizes import env_size, size
from test_bench_query_modes import GROUPS, MODES, PURPOSE, SQL, _policy, declared, warm

from datafed.client import Federation
from datafed.local.federation import LocalFederation, NodeSpec

ROWS = [
    int(r)
    for r in env_size("DATAFED_BENCH_QUERY_SCALE_ROWS", "10000000,100000000", "4000").split(",")
]
NODE_COUNTS = [int(n) for n in env_size("DATAFED_BENCH_QUERY_SCALE_NODES", "10,30", "4").split(",")]
NODE_ROWS = size(1_000_000, 2_000)
SPARK = os.environ.get("DATAFED_BENCH_QUERY_SCALE_SPARK", "1") != "0"
ROUNDS = size(3, 1)

#: (engine, rows per node, nodes), in the order they run.
CONFIGS = (
    [("duckdb", r, 3) for r in ROWS]
    + ([("spark", max(ROWS), 3)] if SPARK else [])
    + [("duckdb", NODE_ROWS, n) for n in NODE_COUNTS]
)
CASES = [(c, m) for c in CONFIGS for m in ("plain", *MODES)]


def _spark_source(parquet: Path) -> str:
    return (
        '[datasets.spark]\nmaster = "local[2]"\n'
        f'parquet = "{parquet}"\n'
        '[datasets.spark.conf]\n"spark.driver.memory" = "1g"\n'
    )


def _start(root: Path, cache: Path, engine: str, rows: int, nodes: int) -> LocalFederation:
    names = [f"meter-{i:02d}" for i in range(nodes)]
    specs = [
        NodeSpec(n, f"{n} metering office", [("readings", COLUMNS, [])], _policy()) for n in names
    ]
    local = LocalFederation.create(root, specs)
    for i, node in enumerate(local.nodes):
        if engine == "duckdb":
            source = f'path = "{duckdb_file(cache, rows, seed=i, groups=GROUPS)}"\n'
        else:
            source = _spark_source(readings_parquet(cache, rows, seed=i, groups=GROUPS))
        text = node.config.read_text().replace('path = "data/readings.sqlite"\n', source)
        node.config.write_text(text)
    local.timeout_s = 600.0
    return local


@pytest.fixture(scope="module")
def feds(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The federation of one configuration at a time (the previous one is stopped first)."""
    cache = Path(request.config.cache.mkdir("datafed-engine-data"))
    running: dict[tuple[str, int, int], tuple[LocalFederation, Federation]] = {}

    def get(config: tuple[str, int, int]) -> Federation:
        if config not in running:
            for local, _ in running.values():
                local.stop()
            running.clear()
            engine, rows, nodes = config
            root = tmp_path_factory.mktemp(f"scale-{engine}-{rows}-{nodes}")
            local = _start(root, cache, engine, rows, nodes)
            local.start(ready_timeout_s=300.0)
            client = Federation.from_file(local.fed_toml)
            client.query(SQL, purpose=PURPOSE, protection="plain")  # warm the page cache
            running[config] = (local, client)
        return running[config][1]

    try:
        yield get
    finally:
        for local, _ in running.values():
            local.stop()


def _run(client: Federation, mode: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(SQL, purpose=PURPOSE, protection=mode).rows]


@pytest.mark.parametrize(
    ("config", "mode"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}n-{m}" for c, m in CASES]
)
def test_query_scale(benchmark: Any, bench_row: Any, feds: Any, config: Any, mode: str) -> None:
    engine, rows, nodes = config
    params = {
        "rows_per_node": rows,
        "groups": GROUPS,
        "nodes": nodes,
        "tls": True,
        "engine": engine,
    }
    bench_row(
        f"query.{mode}",
        role="both" if mode == "plain" else "ours",
        unit="s",
        params=params,
        pair=f"query|{engine}|{rows}|{nodes}",
        baseline_name="query.plain",
    )
    client = feds(config)
    warm(client, mode)
    out = declared(benchmark.pedantic(_run, args=(client, mode), rounds=ROUNDS, iterations=1))
    assert len(out) == GROUPS and sum(r[2] for r in out) == rows * nodes
