"""The same queries over the same logical rows give the same GroupRows on every engine.

SQLite (typed), SQLite with every column TEXT (a CSV imported the ordinary way, types
declared in node.toml), DuckDB, PostgreSQL (a real server) and Spark over Parquet.
Keys, row counts and integer components are equal exactly; sums of REAL columns within
one fixed-point unit (engines add floats in different orders).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.local import synth
from datafed.query.components import components
from datafed.query.sql import parse_sql
from nodes.config import DatasetConfig
from nodes.stores import DataStore
from tests.engines.data import ENGINES, pipe_rows, write

BITS = 16
QUERIES = [
    "SELECT material, SUM(bursts), COUNT(*), AVG(repair_hours) FROM pipe_incidents GROUP BY material",
    "SELECT year, month, SUM(bursts), MIN(repair_hours), MAX(pressure_drop_kpa) FROM pipe_incidents "
    "WHERE year = 2024 AND material IN ('steel', 'pvc') GROUP BY year, month",
    "SELECT COUNT(repair_hours), VAR(repair_hours), HISTOGRAM(repair_hours, 0, 2, 4, 8) FROM pipe_incidents",
    "SELECT district, diameter_mm, COUNT(*), SUM(repair_hours) FROM pipe_incidents "
    "WHERE NOT (diameter_mm BETWEEN 150 AND 300) OR month != 1 GROUP BY district, diameter_mm",
    "SELECT year, SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = '2023' OR month >= 11.5 GROUP BY year",
    "SELECT SUM(bursts) FROM pipe_incidents WHERE year > 3000",
]
BOUNDS = {"repair_hours": (0.0, 5.0), "bursts": (0.0, 1.0), "pressure_drop_kpa": (-10.0, 40.0)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory, pg, spark) -> Iterator[dict[str, DataStore]]:
    root = tmp_path_factory.mktemp("parity")
    rows = pipe_rows("north")
    out = {}
    for engine in ENGINES:
        keys = write(engine, root, "pipe_incidents", synth.PIPE_COLUMNS, rows, pg=pg, tag="-parity")
        cfg = DatasetConfig.model_validate(
            {"name": "pipe_incidents", **keys}, context={"base_dir": root}
        )
        out[engine] = DataStore([cfg])
    yield out
    for s in out.values():
        s.close()


def _same(ref, got, comps):
    assert [g.key for g in got] == [g.key for g in ref]
    assert [g.rows for g in got] == [g.rows for g in ref]
    for a, b in zip(ref, got, strict=True):
        for c, x, y in zip(comps, a.values, b.values, strict=True):
            if c.kind in ("count", "bin") or c.column in ("bursts", "year", "month", "diameter_mm"):
                assert x == y, c
            else:
                assert abs(x - y) <= 1, (c, x, y)


def test_engines_report_the_declared_types(stores):
    for engine, store in stores.items():
        assert store.column_types("pipe_incidents") == {
            "segment_id": "text",
            "district": "text",
            "year": "integer",
            "month": "integer",
            "material": "text",
            "diameter_mm": "integer",
            "bursts": "integer",
            "repair_hours": "real",
            "pressure_drop_kpa": "real",
        }, engine
    assert {s.engine("pipe_incidents") for s in stores.values()} == {
        "sqlite",
        "duckdb",
        "postgresql",
        "spark",
    }


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("bounded", [False, True])
def test_same_answer_on_every_engine(stores, sql, bounded):
    spec = parse_sql(sql)
    comps = components(spec)
    bounds = BOUNDS if bounded else None
    ref = stores["sqlite"].aggregate(spec, comps, BITS, bounds)
    if "year > 3000" not in sql:
        assert ref
    for engine in ENGINES[1:]:
        got = stores[engine].aggregate(spec, comps, BITS, bounds)
        _same(ref, got, comps)
        assert all(
            type(v) is type(w)
            for g, h in zip(ref, got, strict=True)
            for v, w in zip(g.key, h.key, strict=True)
        ), engine


def test_reference_equals_sqlite_itself(stores, tmp_path):
    """The typed-SQLite reference is what SQLite's own SQL answers (NULL keys included)."""
    sql = "SELECT material, SUM(bursts), COUNT(*) FROM pipe_incidents GROUP BY material"
    got = stores["sqlite"].aggregate(parse_sql(sql), components(parse_sql(sql)), BITS)
    path = Path(
        write("sqlite", tmp_path, "pipe_incidents", synth.PIPE_COLUMNS, pipe_rows("north"))["path"]
    )
    with sqlite3.connect(path) as db:
        want = sorted(db.execute(sql).fetchall(), key=lambda r: (r[0] is None, r[0] or ""))
    assert [(g.key[0], g.values[0] >> BITS, g.rows) for g in got] == want
    assert want[-1][0] is None  # the NULL group exists and sorts last


def test_read_rows_agree(stores):
    want = sorted(
        stores["sqlite"].read_rows("pipe_incidents", ["year", "repair_hours", "material"]),
        key=repr,
    )
    for store in stores.values():
        rows = store.read_rows("pipe_incidents", ["year", "repair_hours", "material"])
        assert sorted(rows, key=repr) == want
    pg_rows = stores["postgresql"].read_rows("pipe_incidents", ["year", "month"])
    spark_rows = stores["spark"].read_rows("pipe_incidents", ["year", "month"])
    assert (
        sorted(pg_rows)
        == sorted(spark_rows)
        == sorted(stores["sqlite-text"].read_rows("pipe_incidents", ["year", "month"]))
    )


def test_hostile_literals_are_values_on_every_engine(stores):
    """A string literal built to break out of SQL is a bound value: no rows, table intact."""
    for engine, store in stores.items():
        for sql in [
            "SELECT COUNT(*) FROM pipe_incidents WHERE district = 'x''; DROP TABLE pipe_incidents; --'",
            "SELECT COUNT(*) FROM pipe_incidents WHERE material IN ('steel'' OR 1=1 --', '\\\\')",
        ]:
            spec = parse_sql(sql)
            assert store.aggregate(spec, (), BITS) == [], engine
        assert (
            store.aggregate(parse_sql("SELECT COUNT(*) FROM pipe_incidents"), (), BITS)[0].rows > 0
        )


def test_concurrent_queries_give_the_same_answer(stores):
    """The servicers run queries in threads: every engine's connections are per thread."""
    from concurrent.futures import ThreadPoolExecutor

    spec = parse_sql(QUERIES[0])
    comps = components(spec)
    for engine in ("duckdb", "sqlite", "postgresql"):
        store = stores[engine]
        want = store.aggregate(spec, comps, BITS)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _, s=store: s.aggregate(spec, comps, BITS), range(16)))
        assert all([g.key for g in r] == [g.key for g in want] for r in results), engine
        assert all([g.rows for g in r] == [g.rows for g in want] for r in results), engine
