"""Benchmark data for the engine rows: ``readings(zone INTEGER, usage REAL)`` at any size.

Rows are generated with numpy (vectorised, seeded, one million at a time), written once
to Parquet with pyarrow and cached under pytest's cache directory
(``.pytest_cache/d/datafed-engine-data``, removed by ``make clean``); the SQLite and
DuckDB files of each size are built from that Parquet file and cached beside it, so a
second ``make bench K=engine`` starts at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1_000_000
COLUMNS = (("zone", "INTEGER"), ("usage", "REAL"))


def _name(rows: int, seed: int, groups: int) -> str:
    return f"readings-{rows}-s{seed}-g{groups}"


def readings_parquet(cache: Path, rows: int, seed: int = 0, groups: int = 100) -> Path:
    """The Parquet file of ``rows`` readings in ``groups`` zones (cached)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cache / f"{_name(rows, seed, groups)}.parquet"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    schema = pa.schema([("zone", pa.int64()), ("usage", pa.float64())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            rng = np.random.default_rng([seed, start // CHUNK])
            zone = rng.integers(0, groups, n, dtype=np.int64)
            usage = np.round(rng.gamma(2.0, 20.0, n), 3)
            writer.write_table(pa.table({"zone": zone, "usage": usage}, schema=schema))
    tmp.rename(path)
    return path


def sqlite_file(cache: Path, rows: int, seed: int = 0, groups: int = 100) -> Path:
    """A typed SQLite file of the same rows (cached)."""
    import pyarrow.parquet as pq

    path = cache / f"{_name(rows, seed, groups)}.sqlite"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as db:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE readings (zone INTEGER, usage REAL)")
        source = pq.ParquetFile(readings_parquet(cache, rows, seed, groups))
        for batch in source.iter_batches(batch_size=CHUNK):
            cols = batch.to_pydict()
            db.executemany(
                "INSERT INTO readings VALUES (?, ?)", zip(cols["zone"], cols["usage"], strict=True)
            )
    tmp.rename(path)
    return path


def duckdb_file(cache: Path, rows: int, seed: int = 0, groups: int = 100) -> Path:
    """A DuckDB file of the same rows (cached)."""
    import duckdb

    path = cache / f"{_name(rows, seed, groups)}.duckdb"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    source = readings_parquet(cache, rows, seed, groups)
    with duckdb.connect(str(tmp)) as con:
        con.execute("CREATE TABLE readings AS SELECT * FROM read_parquet(?)", [str(source)])
    tmp.rename(path)
    return path


def load_postgres(pg: Any, parquet: Path, dbname: str) -> str:
    """Load the Parquet rows into a fresh PostgreSQL database (COPY of CSV); return its URL."""
    import duckdb

    url = pg.create_table(
        dbname,
        "readings",
        (("zone", "BIGINT"), ("usage", "DOUBLE PRECISION")),
        [],
        reader="bench",
        password="bench-pw",
    )
    csv = parquet.with_suffix(".csv")
    if not csv.exists():
        with duckdb.connect() as con:
            con.execute(f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{csv}' (HEADER false)")
    with pg.connect(dbname) as conn:
        with (
            conn.cursor().copy("COPY readings FROM STDIN (FORMAT csv)") as copy,
            csv.open("rb") as f,
        ):
            while block := f.read(1 << 20):
                copy.write(block)
        conn.execute("ANALYZE readings")
    return url
