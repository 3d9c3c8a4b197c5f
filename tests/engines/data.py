"""One logical table written to every engine the node supports, for parity tests.

``write(engine, ...)`` stores the same rows as typed SQLite, TEXT-imported SQLite (every
column TEXT, every value text, empty cells for NULL: what ``sqlite3 .import --csv``
makes), DuckDB, PostgreSQL or Parquet for Spark, and returns the ``[[datasets]]`` keys
that point a node at it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datafed.local import synth

ENGINES = ("sqlite", "sqlite-text", "duckdb", "postgresql", "spark")
_ARROW = {"INTEGER": "int64", "REAL": "float64", "TEXT": "string"}
_PG = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT"}
_DECLARED = {"INTEGER": "integer", "REAL": "real", "TEXT": "text"}


def pipe_rows(district: str, seed: int = 3, segments: int = 12) -> list[tuple[Any, ...]]:
    """Pipe incidents with some NULLs (material, repair_hours), two years."""
    rows = synth.pipe_incidents(district, seed=seed, segments=segments, years=(2023, 2024))
    out = []
    for i, r in enumerate(rows):
        r = list(r)
        if i % 17 == 0:
            r[4] = None  # material unknown
        if i % 13 == 0:
            r[7] = None  # repair_hours unknown
        out.append(tuple(r))
    return out


def arrow_table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> Any:
    import pyarrow as pa

    cols = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return pa.table(
        {
            n: pa.array(list(v), type=getattr(pa, _ARROW[t])())
            for (n, t), v in zip(columns, cols, strict=True)
        }
    )


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def write(
    engine: str,
    directory: Path,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    pg: Any = None,
    tag: str = "",
) -> dict[str, Any]:
    """Store ``rows`` for ``engine``; return the dataset's node.toml keys (no policy)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{table}{tag}"
    if engine == "sqlite":
        synth.write_table(directory / f"{stem}.sqlite", table, columns, rows)
        return {"path": str(directory / f"{stem}.sqlite")}
    if engine == "sqlite-text":
        path = directory / f"{stem}-text.sqlite"
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:
            db.execute(
                f'CREATE TABLE "{table}" ({", ".join(f"{chr(34)}{n}{chr(34)} TEXT" for n, _ in columns)})'
            )
            marks = ", ".join("?" for _ in columns)
            # Numbers as text, a missing number as an empty cell; a missing text stays NULL.
            text = [t == "TEXT" for _, t in columns]
            db.executemany(
                f'INSERT INTO "{table}" VALUES ({marks})',
                [[v if t else _text(v) for t, v in zip(text, r, strict=True)] for r in rows],
            )
        types = {n: _DECLARED[t] for n, t in columns if t != "TEXT"}
        return {"path": str(path), "types": types}
    if engine == "duckdb":
        import duckdb

        path = directory / f"{stem}.duckdb"
        path.unlink(missing_ok=True)
        data = arrow_table(columns, rows)  # noqa: F841 - read by DuckDB's replacement scan
        with duckdb.connect(str(path)) as con:
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM data')
        return {"path": str(path)}
    if engine == "spark":
        import pyarrow.parquet as pq

        path = directory / f"{stem}.parquet"
        pq.write_table(arrow_table(columns, rows), path)
        return {"spark": {"master": "local[2]", "parquet": str(path)}}
    if engine == "postgresql":
        pcols = [(n, _PG[t]) for n, t in columns]
        name = f"{stem}".lower()
        url = pg.create_table(name, table, pcols, rows, reader="reader", password="reader-pw")
        return {"url": url, "password_env": "DATAFED_TEST_PG_PASSWORD"}
    raise ValueError(engine)
