"""Per-dialect schema reading, typed column expressions and type-conformance checks.

* :func:`describe` reads a table's columns and their stored types (SQLAlchemy reflection;
  DuckDB through ``information_schema``, which ``duckdb-engine``'s reflection cannot read
  under SQLAlchemy 2.1) and finds a stable row id.
* :func:`typed_expr` converts stored values to the declared type inside the query.
* :func:`nonconforming_expr` is true for a stored value that does not fit its type.  SQLite
  types values, not columns, so every SQLite column is checked; the typed engines need a
  check only where the declared type differs from the stored one.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from datafed.errors import ConfigError
from nodes.config import DatasetConfig
from nodes.stores.base import Column
from nodes.stores.types import PATTERNS

__all__ = ["describe", "duck_type", "nonconforming_expr", "stored_type", "typed_expr"]

_DUCK_INT = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_DUCK_REAL = ("FLOAT", "DOUBLE", "REAL", "DECIMAL")
_SA_TYPES: dict[str, Any] = {
    "integer": sa.BigInteger,
    "real": sa.Double,
    "text": sa.Text,
    "boolean": sa.Boolean,
}


def stored_type(t: sa.types.TypeEngine[Any]) -> str | None:
    """The column type of a SQLAlchemy type: ``None`` if untyped, ``other`` if unsupported."""
    if isinstance(t, sa.types.NullType):
        return None
    if isinstance(t, sa.Boolean):
        return "boolean"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, (sa.Numeric, sa.Float)):  # Float, Double and DECIMAL
        return "real"
    if isinstance(t, sa.String):
        return "text"
    return "other"


def duck_type(name: str) -> str:
    """Our column type of a DuckDB type name (``BIGINT`` -> ``integer``, ...)."""
    base = name.upper().split("(", 1)[0].strip()
    if base.lstrip("U") in _DUCK_INT:
        return "integer"
    if base in _DUCK_REAL:
        return "real"
    if base == "VARCHAR":
        return "text"
    return "boolean" if base == "BOOLEAN" else "other"


def _duckdb_schema(conn: sa.Connection, table: str) -> dict[str, str | None]:
    ic = sa.table(
        "columns",
        sa.column("table_name"),
        sa.column("table_schema"),
        sa.column("column_name"),
        sa.column("data_type"),
        sa.column("ordinal_position"),
        schema="information_schema",
    )
    stmt = (
        sa.select(ic.c.column_name, ic.c.data_type)
        .where(ic.c.table_name == table, ic.c.table_schema == sa.func.current_schema())
        .order_by(ic.c.ordinal_position)
    )
    return {str(n): duck_type(str(t)) for n, t in conn.execute(stmt)}


def describe(engine: sa.Engine, cfg: DatasetConfig) -> tuple[sa.Table, dict[str, str | None]]:
    """Read the table: a Core ``Table`` and each column's stored type."""
    name = cfg.table_name
    with engine.connect() as conn:
        if engine.dialect.name == "duckdb":
            schema = _duckdb_schema(conn, name)
            cols = [
                sa.Column(n, _SA_TYPES.get(t or "", sa.types.NullType)) for n, t in schema.items()
            ]
        else:
            insp = sa.inspect(conn)
            try:
                info = insp.get_columns(name)
            except sa.exc.NoSuchTableError:
                info = []
            schema = {str(c["name"]): stored_type(c["type"]) for c in info}
            cols = [sa.Column(c["name"], c["type"]) for c in info]
        if not schema:
            raise ConfigError(f"dataset {cfg.name!r}: table {name!r} not found")
    return sa.Table(name, sa.MetaData(), *cols), schema


def typed_expr(dialect: str, col: sa.ColumnElement[Any], c: Column) -> sa.ColumnElement[Any]:
    """``col`` as a value of the declared type (unchanged where it is stored as such)."""
    if not c.cast:
        return col
    if c.stored in ("text", "none"):
        col = sa.func.nullif(col, "")  # an empty CSV cell is a missing value, not 0
    if c.type == "boolean":
        if c.stored == "text":
            low = sa.func.lower(col)
            return sa.case(
                (low.in_(["1", "true"]), sa.true()), (low.in_(["0", "false"]), sa.false())
            )
        return sa.case((col == 1, sa.true()), (col == 0, sa.false()))
    if c.type == "integer" and c.stored == "boolean":
        return sa.cast(col, sa.Integer)
    return sa.cast(col, _SA_TYPES[c.type])


def nonconforming_expr(
    dialect: str, col: sa.ColumnElement[Any], c: Column
) -> sa.ColumnElement[bool] | None:
    """True for a stored value that does not fit the column's type (``None``: none can)."""
    pattern = PATTERNS.get(c.type)
    text = sa.type_coerce(col, sa.Text)
    if dialect == "sqlite":
        kind = sa.func.typeof(col)
        native = {"integer": ["integer"], "real": ["integer", "real"], "boolean": []}
        ok: sa.ColumnElement[bool] = kind.in_(native.get(c.type, ["text", "integer", "real"]))
        if pattern is not None and c.stored in ("text", "none"):
            ok = sa.or_(ok, sa.and_(kind == "text", sa.or_(text == "", text.regexp_match(pattern))))
        if c.type == "integer":
            ok = sa.or_(ok, sa.and_(kind == "real", col == sa.func.round(col)))
        if c.type == "boolean":
            ok = sa.or_(ok, sa.and_(kind == "integer", col.in_([0, 1])))
        return sa.and_(col.is_not(None), sa.not_(ok))
    if not c.cast or c.type == "text" or (c.type in ("real", "integer") and c.stored == "boolean"):
        return None
    if c.type == "real" and c.stored == "integer":
        return None
    if c.stored == "text" and pattern is not None:
        return sa.and_(col.is_not(None), text != "", sa.not_(text.regexp_match(pattern)))
    if c.type == "integer" and c.stored == "real":
        return sa.and_(col.is_not(None), col != sa.func.round(col))
    if c.type == "boolean" and c.stored in ("integer", "real"):
        return sa.and_(col.is_not(None), col.not_in([0, 1]))
    return col.is_not(None)  # e.g. a TIMESTAMP declared integer: nothing fits
