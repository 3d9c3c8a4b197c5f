"""Staging an import in DuckDB: read, detect and check types, report the first bad line.

Used by :mod:`nodes.importer.load`.  The files are read by DuckDB (``read_csv`` with its type
sniffer and ``store_rejects``; ``read_parquet``) into an in-memory temporary table; the
typed rows are then a view over it.  Nothing here writes the node's data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafed.errors import ConfigError, DatafedError
from datafed.query.spec import check_identifier
from nodes.config import DatasetConfig
from nodes.stores.sql_schema import duck_type
from nodes.stores.types import PATTERNS

__all__ = ["ImportRefused", "Progress", "Staged", "file_format", "run_with_progress", "stage"]

Progress = Callable[[str, float], None]
_CAST = {"integer": "BIGINT", "real": "DOUBLE", "text": "VARCHAR"}
_META = ("filename", "file_row_number")


class ImportRefused(DatafedError):
    """An import was refused; nothing was written (the message names file and line)."""


def file_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the file name."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ConfigError(f"{path}: unknown format (give .csv, .csv.gz, .tsv or .parquet)")


@dataclass
class Staged:
    """Typed rows ready to write: ``typed_rows`` in :attr:`con`."""

    con: Any
    types: dict[str, str]
    rows: int
    rows_per_file: dict[str, int]

    def batches(self, size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The typed rows in file order, ``size`` at a time."""
        cur = self.con.execute("SELECT * FROM typed_rows")
        while rows := cur.fetchmany(size):
            yield rows

    def close(self) -> None:
        """Drop the staging database."""
        self.con.close()


def run_with_progress(
    con: Any, sql: str, params: list[Any], label: str, progress: Progress | None
) -> None:
    """Run one statement, reporting DuckDB's own progress estimate while it runs."""
    if progress is None:
        con.execute(sql, params)
        return
    box: dict[str, BaseException] = {}

    def work() -> None:
        try:
            con.execute(sql, params)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
        pct = con.query_progress()
        if pct >= 0:
            progress(label, min(pct, 100.0) / 100.0)
    progress(label, 1.0)
    if "error" in box:
        raise box["error"]


def _rejects(con: Any) -> None:
    row = con.execute(
        "SELECT s.file_path, e.line, e.column_name, e.error_type, e.csv_line, "
        "(SELECT count(*) FROM reject_errors) FROM reject_errors e JOIN reject_scans s "
        "ON e.scan_id = s.scan_id AND e.file_id = s.file_id ORDER BY s.file_path, e.line LIMIT 1"
    ).fetchone()
    if row is None:
        return
    path, line, column, kind, text, count = row
    what = f"column {column!r} " if column else ""
    raise ImportRefused(
        f"{Path(path).name} line {line}: {what}does not fit ({str(kind).lower()}): "
        f"{str(text)[:200]!r} "
        f"({count} row(s) refused; nothing imported)"
    )


def stage(ds: DatasetConfig, paths: Sequence[Path], progress: Progress | None) -> Staged:
    """Read ``paths`` into a staging table and check every declared column."""
    import duckdb

    kinds = {file_format(p) for p in paths}
    if len(kinds) != 1:
        raise ConfigError("give files of one format (all CSV or all Parquet)")
    kind = kinds.pop()
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        files = [str(p) for p in paths]
        label = f"reading {paths[0].name}" + (f" (+{len(paths) - 1})" if len(paths) > 1 else "")
        if kind == "csv":
            # Declared columns are read as text and checked below: DuckDB's own cast
            # would round '2023.5' into an integer column.  Names are identifiers.
            declared = ", ".join(f"'{c}': 'VARCHAR'" for c in ds.types)
            types = f", types = {{{declared}}}" if declared else ""
            sql = (
                "CREATE TEMP TABLE raw AS SELECT * FROM read_csv(?, header = true, "
                f"store_rejects = true, filename = true{types})"
            )
        else:
            sql = (
                "CREATE TEMP TABLE raw AS SELECT * FROM "
                "read_parquet(?, filename = true, file_row_number = true)"
            )
        try:
            run_with_progress(con, sql, [files], label, progress)
        except duckdb.Error as exc:
            raise ImportRefused(f"cannot read {label[8:]}: {str(exc).splitlines()[0]}") from None
        if kind == "csv":
            _rejects(con)
        return _check(con, ds, kind)
    except BaseException:
        con.close()
        raise


def _check(con: Any, ds: DatasetConfig, kind: str) -> Staged:
    described = con.execute("DESCRIBE raw").fetchall()
    raw = {str(r[0]): duck_type(str(r[1])) for r in described if r[0] not in _META}
    for name in raw:
        # Column names come from the file: only plain identifiers reach SQL text (and only
        # they can be queried at all).
        try:
            check_identifier(name)
        except ValueError:
            raise ImportRefused(
                f"column name {name[:80]!r} is not an identifier (letters, digits and '_', "
                "not starting with a digit; at most 64)"
            ) from None
    for col in ds.types:
        if col not in raw:
            raise ImportRefused(f"types names column {col!r}, which the files do not have")
    final = {c: ds.types.get(c, t if t != "other" else "text") for c, t in raw.items()}
    unit = "line" if kind == "csv" else "row"
    for col, ctype in final.items():
        bad = _bad(col, raw[col], ctype)
        if bad is None:
            continue
        (count,) = con.execute(f"SELECT count(*) FROM raw WHERE {bad}").fetchone()
        if not count:
            continue
        pos = "rowid" if kind == "csv" else "file_row_number"
        fname, at, value = con.execute(
            f'SELECT filename, {pos}, "{col}"::VARCHAR FROM raw WHERE {bad} ORDER BY {pos} LIMIT 1'
        ).fetchone()
        if kind == "csv":  # rows are staged in file order: line = row index + header
            (first,) = con.execute(
                "SELECT min(rowid) FROM raw WHERE filename = ?", [fname]
            ).fetchone()
            n = at - first + 2
        else:
            n = at + 1
        raise ImportRefused(
            f"{Path(fname).name} {unit} {n}: column {col!r}: {value!r} is not {ctype} "
            f"({count} row(s) do not fit; nothing imported)"
        )
    exprs = ", ".join(f'{_cast(c, raw[c], t)} AS "{c}"' for c, t in final.items())
    con.execute(f"CREATE TEMP VIEW typed_rows AS SELECT {exprs} FROM raw ORDER BY rowid")
    per_file = dict(con.execute("SELECT filename, count(*) FROM raw GROUP BY filename").fetchall())
    return Staged(con, final, sum(per_file.values()), {str(k): int(v) for k, v in per_file.items()})


def _bad(col: str, raw: str, ctype: str) -> str | None:
    """SQL that is true for a staged value that does not fit ``ctype`` (None: all fit)."""
    c = f'"{col}"'
    if raw == ctype or ctype == "text" or (ctype == "real" and raw == "integer"):
        return None
    if raw in ("text", "other"):
        pattern = PATTERNS[ctype].replace("'", "''")
        text = f"{c}::VARCHAR"
        return f"({c} IS NOT NULL AND {text} <> '' AND NOT regexp_full_match({text}, '{pattern}'))"
    if ctype == "integer" and raw == "real":
        return f"({c} IS NOT NULL AND {c} <> round({c}))"
    if ctype == "boolean" and raw in ("integer", "real"):
        return f"({c} IS NOT NULL AND {c} NOT IN (0, 1))"
    return None  # boolean read as integer or real: 0/1


def _cast(col: str, raw: str, ctype: str) -> str:
    c = f'"{col}"'
    if raw == ctype:
        return c
    if raw in ("text", "other"):
        c = f"NULLIF({c}::VARCHAR, '')"
    if ctype == "boolean":
        if raw in ("text", "other"):
            return (
                f"CASE WHEN lower({c}) IN ('1', 'true') THEN true "
                f"WHEN lower({c}) IN ('0', 'false') THEN false END"
            )
        return f"({c} = 1)"
    return f"CAST({c} AS {_CAST[ctype]})"
