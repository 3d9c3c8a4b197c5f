"""Engine rows: the node's aggregate queries on each store, beside SQLite from the same run.

``engine.<name>`` measures ``DataStore.aggregate`` -- the node's own compile, run and
encode path -- over ``DATAFED_BENCH_ENGINE_ROWS`` rows per node (``rows``; default
1,000,000 and 10,000,000) in 100 zones, for two queries (``query``: ``sum`` is
``SELECT zone, SUM(usage), COUNT(*) ... GROUP BY zone``, ``avg_max`` adds a filter, AVG
and MAX), for SQLite (the baseline, ``ratio`` 1), DuckDB, PostgreSQL (a
server the benchmark starts on loopback) and Spark (``local[2]`` over Parquet).  ``ratio``
is SQLite's time over the engine's.  Select with ``make bench K=engine``; limit the
engines with ``DATAFED_BENCH_ENGINES=sqlite,duckdb``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_data import duckdb_file, load_postgres, readings_parquet, sqlite_file
from sizes import env_size

from datafed.query.components import components
from datafed.query.sql import parse_sql
from nodes.config import DatasetConfig
from nodes.stores import DataStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.engines.pg
ROWS = [
    int(x) for x in env_size("DATAFED_BENCH_ENGINE_ROWS", "1000000,10000000", "10000").split(",")
]
ENGINES = os.environ.get("DATAFED_BENCH_ENGINES", "sqlite,duckdb,postgresql,spark").split(",")
QUERIES = {
    "sum": "SELECT zone, SUM(usage), COUNT(*) FROM readings GROUP BY zone",
    "avg_max": "SELECT zone, AVG(usage), MAX(usage) FROM readings "
    "WHERE usage BETWEEN 10 AND 60 AND zone < 50 GROUP BY zone",
}
ROUNDS = 3


@pytest.fixture(scope="module")
def cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("datafed-engine-data"))


@pytest.fixture(scope="module")
def stores(cache: Path) -> Iterator[dict[tuple[str, int], DataStore]]:
    pg = None
    opened: dict[tuple[str, int], DataStore] = {}
    try:
        for rows in ROWS:
            parquet = readings_parquet(cache, rows)
            for engine in ENGINES:
                keys: dict[str, Any]
                if engine == "sqlite":
                    keys = {"path": str(sqlite_file(cache, rows))}
                elif engine == "duckdb":
                    keys = {"path": str(duckdb_file(cache, rows))}
                elif engine == "postgresql":
                    if pg is None:
                        from tests.engines.pg import start_pg

                        pg = start_pg()
                        os.environ["DATAFED_BENCH_PG"] = "bench-pw"
                    url = load_postgres(pg, parquet, f"bench{rows}")
                    keys = {"url": url, "password_env": "DATAFED_BENCH_PG"}
                else:
                    keys = {
                        "spark": {
                            "master": "local[2]",
                            "parquet": str(parquet),
                            "conf": {"spark.driver.memory": "2g"},
                        }
                    }
                cfg = DatasetConfig.model_validate({"name": "readings", **keys})
                opened[(engine, rows)] = DataStore([cfg])
        yield opened
    finally:
        for s in opened.values():
            s.close()
        if pg is not None:
            pg.stop()


@pytest.mark.parametrize("query", list(QUERIES))
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("engine", ENGINES)
def test_engine(benchmark, bench_row, stores, engine, rows, query):
    bench_row(
        f"engine.{engine}",
        role="both" if engine == "sqlite" else "ours",
        unit="s",
        params={"query": query, "rows": rows},
        pair=f"engine|{rows}|{query}",
        baseline_name="engine.sqlite",
    )
    store = stores[(engine, rows)]
    spec = parse_sql(QUERIES[query])
    comps = components(spec)
    groups = benchmark.pedantic(
        store.aggregate, args=(spec, comps, 16), rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    reference = stores[("sqlite", rows)] if "sqlite" in ENGINES else store
    if store is not reference:
        want = reference.aggregate(spec, comps, 16)
        assert [g.key for g in groups] == [g.key for g in want]
        assert [g.rows for g in groups] == [g.rows for g in want]
