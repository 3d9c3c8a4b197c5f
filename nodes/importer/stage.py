"""Staging an import in DuckDB: read, detect and check types, report the first bad line.

Used by :mod:`nodes.importer.load`.  The files are read by DuckDB (``read_csv`` with its type
sniffer and ``store_rejects``; ``read_parquet``) into an in-memory temporary table; the
typed rows are then a view over it.  Nothing here writes the node's data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafed.errors import ConfigError, DatafedError
from datafed.query.spec import check_identifier
from nodes.config import DatasetConfig
from nodes.stores.sql_schema import duck_type
from nodes.stores.types import PATTERNS

__all__ = [
    "CsvOptions",
    "ImportRefused",
    "Progress",
    "Staged",
    "file_format",
    "run_with_progress",
    "stage",
]

Progress = Callable[[str, float], None]
_CAST = {"integer": "BIGINT", "real": "DOUBLE", "text": "VARCHAR"}
_META = ("filename", "file_row_number", "__row")


class ImportRefused(DatafedError):
    """An import was refused; nothing was written (the message names file and line).

    The message is the operator's (it may quote the offending cell); ``public`` is what the
    ledger entry's public part says, naming file, line and column but no stored value and
    no count: witnesses read it (red team 3, finding 1). The full message goes to the
    entry's private part, for auditors.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


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
    #: Why each column has its type (declared, detected, and what decided it).
    decisions: dict[str, str] = field(default_factory=dict)
    #: Missing values (NULL) per column.
    missing: dict[str, int] = field(default_factory=dict)
    #: Lines that repeated the header and were dropped (CSV).
    skipped_headers: int = 0

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
    where = f"{Path(path).name} line {line}: {what}does not fit ({str(kind).lower()})"
    raise ImportRefused(
        f"{where}: {str(text)[:200]!r} ({count} row(s) refused; nothing imported)",
        public=f"{where}; nothing imported",
    )


@dataclass(frozen=True)
class CsvOptions:
    """How CSV text is read: the missing-value tokens, whether repeated headers are dropped."""

    na: tuple[str, ...] = ("",)
    skip_headers: bool = True


def stage(
    ds: DatasetConfig,
    paths: Sequence[Path],
    progress: Progress | None,
    options: CsvOptions | None = None,
) -> Staged:
    """Read ``paths`` into a staging table, decide every column's type and check it."""
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
        opts = options or CsvOptions()
        if kind == "csv":
            # Every column is read as text; its type is decided below (declared, or the
            # narrowest that every value fits): DuckDB's own cast would round '2023.5'
            # into an integer column, and its sniffer turns a column with one 'n/a' into
            # text without saying why.
            sql = (
                "CREATE TEMP TABLE raw0 AS SELECT * FROM read_csv(?, header = true, "
                "store_rejects = true, filename = true, all_varchar = true, nullstr = ?)"
            )
            params: list[Any] = [files, list(opts.na)]
        else:
            sql = (
                "CREATE TEMP TABLE raw AS SELECT * FROM "
                "read_parquet(?, filename = true, file_row_number = true)"
            )
            params = [files]
        try:
            run_with_progress(con, sql, params, label, progress)
        except duckdb.Error as exc:
            raise ImportRefused(
                f"cannot read {label[8:]}: {str(exc).splitlines()[0]}",
                public=f"cannot read {label[8:]}",
            ) from None
        skipped = 0
        if kind == "csv":
            _rejects(con)
            skipped = _drop_headers(con, opts.skip_headers)
        staged = _check(con, ds, kind)
        staged.skipped_headers = skipped
        return staged
    except BaseException:
        con.close()
        raise


def _check(con: Any, ds: DatasetConfig, kind: str) -> Staged:
    described = con.execute("DESCRIBE raw").fetchall()
    raw = {str(r[0]): duck_type(str(r[1])) for r in described if r[0] not in _META}
    _check_names(raw)
    for col in ds.types:
        if col not in raw:
            raise ImportRefused(f"types names column {col!r}, which the files do not have")
    final, decisions = _decide(con, ds, raw, kind)
    unit = "line" if kind == "csv" else "row"
    for col, ctype in final.items():
        bad = _bad(col, raw[col], ctype)
        if bad is None:
            continue
        (count,) = con.execute(f"SELECT count(*) FROM raw WHERE {bad}").fetchone()
        if not count:
            continue
        pos = "__row" if kind == "csv" else "file_row_number"
        fname, at, value = con.execute(
            f'SELECT filename, {pos}, "{col}"::VARCHAR FROM raw WHERE {bad} ORDER BY {pos} LIMIT 1'
        ).fetchone()
        n = _line(con, fname, at) if kind == "csv" else at + 1
        where = f"{Path(fname).name} {unit} {n}: column {col!r}"
        raise ImportRefused(
            f"{where}: {value!r} is not {ctype} ({count} row(s) do not fit; nothing imported)",
            public=f"{where}: a value is not {ctype}; nothing imported",
        )
    exprs = ", ".join(f'{_cast(c, raw[c], t)} AS "{c}"' for c, t in final.items())
    order = "__row" if kind == "csv" else "rowid"
    con.execute(f"CREATE TEMP VIEW typed_rows AS SELECT {exprs} FROM raw ORDER BY {order}")
    per_file = dict(con.execute("SELECT filename, count(*) FROM raw GROUP BY filename").fetchall())
    counts = ", ".join(f'count(*) - count("{c}")' for c in final)
    nulls = con.execute(f"SELECT {counts} FROM raw").fetchone() if final else ()
    return Staged(
        con,
        final,
        sum(per_file.values()),
        {str(k): int(v) for k, v in per_file.items()},
        decisions,
        {c: int(n) for c, n in zip(final, nulls, strict=True)},
    )


def _check_names(names: Sequence[str] | dict[str, str]) -> None:
    for name in names:
        # Column names come from the file: only plain identifiers reach SQL text (and only
        # they can be queried at all).
        try:
            check_identifier(name)
        except ValueError:
            raise ImportRefused(
                f"column name {name[:80]!r} is not an identifier (letters, digits and '_', "
                "not starting with a digit; at most 64)"
            ) from None


def _line(con: Any, fname: str, row: int) -> int:
    """The line of staged row ``row`` in its file (rows count from the header's next)."""
    (first,) = con.execute("SELECT first FROM file_first WHERE filename = ?", [fname]).fetchone()
    return int(row - first + 2)


def _drop_headers(con: Any, skip: bool) -> int:
    """Number the CSV rows by line, drop those repeating the header; return how many."""
    cols = [str(r[0]) for r in con.execute("DESCRIBE raw0").fetchall() if r[0] not in _META]
    _check_names(cols)
    con.execute(
        "CREATE TEMP TABLE file_first AS SELECT filename, min(rowid) AS first FROM raw0 "
        "GROUP BY filename"
    )
    same = " AND ".join(f"trim(\"{c}\") = '{c}'" for c in cols)  # names are identifiers
    where = f"WHERE NOT coalesce({same}, false)" if skip and cols else ""
    con.execute(f"CREATE TEMP TABLE raw AS SELECT *, rowid AS __row FROM raw0 {where}")
    (before,) = con.execute("SELECT count(*) FROM raw0").fetchone()
    (after,) = con.execute("SELECT count(*) FROM raw").fetchone()
    con.execute("DROP TABLE raw0")
    return int(before - after)


def _decide(
    con: Any, ds: DatasetConfig, raw: dict[str, str], kind: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Each column's type and why: declared, from Parquet, or the narrowest every value fits.

    Detection (CSV, every column read as text): ``integer`` when every value is a whole
    number, ``real`` when every value is a number, ``boolean`` for true/false, else
    ``text``; numbers written with leading zeros (``01234``: codes, not quantities) stay
    text.  Missing values (``import_na``) do not count.
    """
    final: dict[str, str] = {}
    why: dict[str, str] = {}
    for col, rtype in raw.items():
        if col in ds.types:
            final[col], why[col] = ds.types[col], "declared in node.toml (types)"
        elif kind != "csv":
            final[col] = rtype if rtype != "other" else "text"
            why[col] = "from the Parquet schema" + (" (not a number)" if rtype == "other" else "")
        else:
            final[col], why[col] = _detect(con, col)
    return final, why


def _detect(con: Any, col: str) -> tuple[str, str]:
    c = f'"{col}"'
    (present,) = con.execute(f"SELECT count({c}) FROM raw").fetchone()
    if not present:
        return "text", "detected: every value is missing"
    zeros = con.execute(
        f"SELECT __row, filename, {c} FROM raw WHERE regexp_full_match({c}, '-?0[0-9]+') "
        "ORDER BY __row LIMIT 1"
    ).fetchone()
    for ctype, what in (
        ("integer", "every value is a whole number"),
        ("real", "every value is a number"),
        ("boolean", "every value is true or false"),
    ):
        if ctype != "boolean" and zeros is not None:
            continue
        pattern = PATTERNS[ctype].replace("'", "''")
        (misfit,) = con.execute(
            f"SELECT count(*) FROM raw WHERE {c} IS NOT NULL AND NOT regexp_full_match({c}, "
            f"'{pattern}')"
        ).fetchone()
        if not misfit:
            return ctype, f"detected: {what}"
    if zeros is not None:
        row, fname, value = zeros
        return "text", (
            f"detected: {value[:40]!r} on {Path(fname).name} line {_line(con, fname, row)} "
            "has leading zeros (a code, kept as text; declare the type to override)"
        )
    pattern = PATTERNS["real"].replace("'", "''")
    numbers, first = con.execute(
        f"SELECT count(*) FILTER (WHERE regexp_full_match({c}, '{pattern}')), "
        f"arg_min(__row, __row) FILTER (WHERE NOT regexp_full_match({c}, '{pattern}')) "
        "FROM raw"
    ).fetchone()
    if not numbers:
        return "text", "detected: not numbers"
    fname, value = con.execute(f"SELECT filename, {c} FROM raw WHERE __row = ?", [first]).fetchone()
    return "text", (
        f"detected: {value[:40]!r} on {Path(fname).name} line {_line(con, fname, first)} is "
        f"not a number ({numbers} value(s) are); if it means missing, add it to import_na "
        "(or --na), or declare the type"
    )


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
