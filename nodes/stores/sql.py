"""A :class:`~nodes.stores.base.DatasetStore` on SQLAlchemy Core: SQLite, DuckDB, PostgreSQL.

The same compiler serves the three engines (and any other SQLAlchemy dialect): a
:class:`QuerySpec` becomes a Core ``SELECT`` with bound parameters, over column expressions
that convert stored values to the declared type (``CAST(year AS BIGINT)`` for a TEXT
column declared ``integer``; docs/stores.md).  Schema and dialect differences live in
:mod:`nodes.stores.sql_schema`; database errors become :class:`NodeError` messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from datafed.errors import ConfigError
from datafed.query.components import Component
from datafed.query.spec import AllOf, AnyOf, Between, Comparison, InList, Not, Predicate, QuerySpec
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest, NodeError, Unavailable
from nodes.stores.base import Column, GroupRow, check_spec
from nodes.stores.connect import open_engine
from nodes.stores.results import group_rows
from nodes.stores.sql_schema import describe, nonconforming_expr, typed_expr
from nodes.stores.types import literal, python_value

__all__ = ["SqlDataset", "db_error"]

log = logging.getLogger("datafed.node.store")
T = TypeVar("T")
_LIMIT_WORDS = ("too many", "too large", "limit", "depth", "maximum")
_OVERFLOW_WORDS = ("overflow", "out of range")
_DOWN_WORDS = ("connect", "closed", "terminat", "timeout", "timed out", "server")


def db_error(engine: str, exc: BaseException) -> NodeError:
    """Turn an engine's exception into a caller-safe node error (the detail is logged)."""
    log.warning("%s database error: %s", engine, exc)
    text = str(exc).lower()
    if any(w in text for w in _OVERFLOW_WORDS):
        return InvalidRequest(f"a value overflowed the node's {engine} number type in this query")
    if any(w in text for w in _LIMIT_WORDS):
        return InvalidRequest(f"query is too large for the node's {engine} database")
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and any(
        w in text for w in _DOWN_WORDS
    ):
        return Unavailable(f"the node's {engine} database is unavailable")
    return InvalidRequest(f"the node's {engine} database refused this query")


class SqlDataset:
    """One dataset behind SQLAlchemy (opened read-only)."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        self.engine_name = cfg.engine_name
        self.engine = open_engine(cfg)
        try:
            self.table, schema = describe(self.engine, cfg)
        except ConfigError:
            self.engine.dispose()
            raise
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise ConfigError(
                f"dataset {cfg.name!r}: cannot open: {str(exc.args[0]).splitlines()[0]}"
            ) from None
        exposed = cfg.columns if cfg.columns is not None else list(schema)
        missing = sorted(set(exposed) - set(schema))
        if missing:
            self.engine.dispose()
            raise ConfigError(f"dataset {cfg.name!r}: columns {missing} not in table")
        self.columns: dict[str, Column] = {}
        for name in exposed:
            stored = schema[name]
            ctype = cfg.types.get(name, stored)
            if ctype is None or ctype == "other":
                self.engine.dispose()
                raise ConfigError(
                    f"dataset {cfg.name!r}: column {name!r} has no type datafed compares; "
                    f'declare it in node.toml (types = {{ {name} = "text" }}) or leave it '
                    "out of columns"
                )
            self.columns[name] = Column(name, ctype, stored or "none")
        self._c = {
            n: typed_expr(self.engine_name, self.table.c[n], c) for n, c in self.columns.items()
        }

    def _run(self, fn: Callable[[sa.Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise db_error(self.engine_name, exc) from None

    def aggregate(
        self,
        spec: QuerySpec,
        comps: Sequence[Component],
        fixed_point_bits: int,
        bounds: Mapping[str, tuple[float, float]] | None = None,
    ) -> list[GroupRow]:
        """One :class:`GroupRow` per non-empty group, sorted by key."""
        check_spec(self.cfg.name, self.columns, spec)
        keys = [self._c[g].label(f"k{i}") for i, g in enumerate(spec.group_by)]
        exprs = [self._component(c, (bounds or {}).get(c.column)) for c in comps]
        stmt = sa.select(*keys, sa.func.count().label("__rows"), *exprs).select_from(self.table)
        if spec.where is not None:
            stmt = stmt.where(self._predicate(spec.where))
        if keys:
            stmt = stmt.group_by(*(self._c[g] for g in spec.group_by))
        rows = self._run(lambda conn: [tuple(r) for r in conn.execute(stmt)])
        types = [self.columns[g].type for g in spec.group_by]
        return group_rows(rows, types, comps, self.columns, fixed_point_bits)

    def read_rows(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row's values of ``columns``, typed."""
        unknown = sorted(set(columns) - set(self.columns))
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {self.cfg.name!r}")
        stmt = sa.select(*(self._c[c] for c in columns)).select_from(self.table)
        types = [self.columns[c].type for c in columns]
        return self._run(
            lambda conn: [
                tuple(python_value(t, v) for t, v in zip(types, r, strict=True))
                for r in conn.execute(stmt)
            ]
        )

    def nonconforming(self, columns: Sequence[str]) -> dict[str, tuple[int, Any]]:
        """Columns whose stored values do not fit their type: ``(count, an example)``."""
        checks = []
        for name in columns:
            bad = nonconforming_expr(self.engine_name, self.table.c[name], self.columns[name])
            if bad is not None:
                checks.append((name, bad))
        if not checks:
            return {}
        exprs = []
        for name, bad in checks:
            raw = sa.cast(self.table.c[name], sa.Text)
            exprs += [sa.func.count(sa.case((bad, 1))), sa.func.min(sa.case((bad, raw)))]
        stmt = sa.select(*exprs).select_from(self.table)
        try:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).one()
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"dataset {self.cfg.name!r}: cannot check column types: "
                f"{str(exc.args[0]).splitlines()[0]}"
            ) from None
        out = {}
        for i, (name, _) in enumerate(checks):
            if row[2 * i]:
                out[name] = (int(row[2 * i]), row[2 * i + 1])
        return out

    def close(self) -> None:
        """Dispose of the engine's connections."""
        self.engine.dispose()

    def _component(self, c: Component, bound: tuple[float, float] | None) -> Any:
        if c.kind == "count":
            return sa.func.count() if c.column == "*" else sa.func.count(self._c[c.column])
        col: Any = self._c[c.column]
        if self.columns[c.column].type == "boolean":
            col = sa.cast(col, sa.Integer)
        if c.kind == "bin":
            upper = col <= c.hi if c.closed else col < c.hi
            return sa.func.sum(sa.case((sa.and_(col >= c.lo, upper), 1), else_=0))
        if bound is not None:
            lo, hi = bound
            col = sa.case((col < lo, lo), (col > hi, hi), else_=col)
        if c.kind == "sum":
            return sa.func.sum(col)
        if c.kind == "sumsq":
            return sa.func.sum(col * col)
        return sa.func.min(col) if c.kind == "min" else sa.func.max(col)

    def _lit(self, column: str, value: object) -> Any:
        return literal(self.columns[column].type, column, value)

    def _predicate(self, p: Predicate) -> sa.ColumnElement[bool]:
        if isinstance(p, Comparison):
            col = self._c[p.column]
            v = self._lit(p.column, p.value)
            ops: dict[str, Callable[[Any], Any]] = {
                "=": col.__eq__,
                "!=": col.__ne__,
                "<": col.__lt__,
                "<=": col.__le__,
                ">": col.__gt__,
                ">=": col.__ge__,
            }
            return ops[p.op](v)  # type: ignore[no-any-return]
        if isinstance(p, InList):
            values = [self._lit(p.column, v) for v in p.values]
            expr = self._c[p.column].in_(values)
            return sa.not_(expr) if p.negated else expr
        if isinstance(p, Between):
            col = self._c[p.column]
            return col.between(self._lit(p.column, p.low), self._lit(p.column, p.high))
        if isinstance(p, AllOf):
            return sa.and_(*(self._predicate(i) for i in p.items))
        if isinstance(p, AnyOf):
            return sa.or_(*(self._predicate(i) for i in p.items))
        assert isinstance(p, Not)
        return sa.not_(self._predicate(p.item))
