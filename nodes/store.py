"""The node's data store: datasets behind SQLAlchemy, queried only through compiled specs.

A :class:`QuerySpec` is compiled to SQLAlchemy Core with bound parameters; no SQL text
from a request ever reaches the database.  SQLite files are opened read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from datafed.errors import ConfigError
from datafed.query.components import Component, encode_fixed
from datafed.query.spec import AllOf, AnyOf, Between, Comparison, InList, Not, Predicate, QuerySpec
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest, NotFound

__all__ = ["DataStore", "GroupRow"]


@dataclass(frozen=True)
class GroupRow:
    """One group of a local aggregate: key, row count and fixed-point component values."""

    key: tuple[Any, ...]
    rows: int
    values: tuple[int, ...]


class _Dataset:
    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        self.engine = sa.create_engine(cfg.sqlalchemy_url())
        try:
            meta = sa.MetaData()
            self.table = sa.Table(cfg.table_name, meta, autoload_with=self.engine)
        except sa.exc.NoSuchTableError as exc:
            raise ConfigError(f"dataset {cfg.name!r}: table {cfg.table_name!r} not found") from exc
        except SQLAlchemyError as exc:
            raise ConfigError(f"dataset {cfg.name!r}: cannot open: {exc.args[0]}") from exc
        present = set(self.table.columns.keys())
        exposed = cfg.columns if cfg.columns is not None else sorted(present)
        missing = sorted(set(exposed) - present)
        if missing:
            raise ConfigError(f"dataset {cfg.name!r}: columns {missing} not in table")
        self.columns: tuple[str, ...] = tuple(exposed)


class DataStore:
    """All datasets of one node."""

    def __init__(self, datasets: Sequence[DatasetConfig]) -> None:
        self._datasets = {d.name: _Dataset(d) for d in datasets}

    def names(self) -> list[str]:
        """Dataset names, sorted."""
        return sorted(self._datasets)

    def columns(self, dataset: str) -> tuple[str, ...]:
        """The columns a dataset exposes; raise :class:`NotFound` for an unknown dataset."""
        return self._get(dataset).columns

    def _get(self, dataset: str) -> _Dataset:
        ds = self._datasets.get(dataset)
        if ds is None:
            raise NotFound(f"unknown dataset {dataset!r}")
        return ds

    def aggregate(
        self,
        spec: QuerySpec,
        comps: Sequence[Component],
        fixed_point_bits: int,
        bounds: Mapping[str, tuple[float, float]] | None = None,
    ) -> list[GroupRow]:
        """Run ``spec`` and return one :class:`GroupRow` per group (blocking).

        With ``bounds``, summed values are clamped to them (for differential privacy).
        """
        ds = self._get(spec.dataset)
        t = ds.table
        unknown = sorted(spec.columns() - set(ds.columns))
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {spec.dataset!r}")
        keys = [t.c[g] for g in spec.group_by]
        exprs = [_component_expr(t, c, (bounds or {}).get(c.column)) for c in comps]
        stmt = sa.select(*keys, sa.func.count().label("__rows"), *exprs).select_from(t)
        if spec.where is not None:
            stmt = stmt.where(_predicate(t, spec.where))
        if keys:
            stmt = stmt.group_by(*keys)
        with ds.engine.connect() as conn:
            result = conn.execute(stmt).all()
        out = []
        nk = len(keys)
        for row in result:
            count = int(row[nk])
            if count == 0 and nk == 0:
                # An aggregate without GROUP BY over no rows still yields one row.
                continue
            values = tuple(
                int(v or 0) if not c.scaled else encode_fixed(v, fixed_point_bits)
                for c, v in zip(comps, row[nk + 1 :], strict=True)
            )
            out.append(GroupRow(key=tuple(row[:nk]), rows=count, values=values))
        return out

    def row_ids(
        self, spec: QuerySpec, keys: Sequence[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], npt.NDArray[np.int64]] | None:
        """Sorted row ids of each group in ``keys`` (``None`` if rows have no stable id)."""
        ds = self._get(spec.dataset)
        t = ds.table
        pk = list(t.primary_key.columns)
        if len(pk) == 1 and isinstance(pk[0].type, sa.Integer):
            rid: sa.ColumnElement[Any] = pk[0]
        elif ds.engine.dialect.name == "sqlite":
            rid = sa.literal_column("rowid")
        else:
            return None
        cols = [t.c[g] for g in spec.group_by]
        stmt = sa.select(*cols, rid).select_from(t)
        if spec.where is not None:
            stmt = stmt.where(_predicate(t, spec.where))
        wanted = set(keys)
        found: dict[tuple[Any, ...], list[int]] = {k: [] for k in keys}
        with ds.engine.connect() as conn:
            for row in conn.execute(stmt):
                key = tuple(row[: len(cols)])
                if key in wanted:
                    found[key].append(int(row[-1]))
        return {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in found.items()}

    def read_rows(self, dataset: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Read the given columns of every row (for approved training jobs only)."""
        ds = self._get(dataset)
        unknown = sorted(set(columns) - set(ds.columns))
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {dataset!r}")
        stmt = sa.select(*(ds.table.c[c] for c in columns))
        with ds.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt).all()]

    def close(self) -> None:
        """Dispose of every engine."""
        for ds in self._datasets.values():
            ds.engine.dispose()


def _component_expr(
    t: sa.Table, c: Component, bound: tuple[float, float] | None = None
) -> sa.ColumnElement[Any]:
    if c.kind == "count":
        return sa.func.count() if c.column == "*" else sa.func.count(t.c[c.column])
    col: sa.ColumnElement[Any] = t.c[c.column]
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
    if c.kind == "min":
        return sa.func.min(col)
    return sa.func.max(col)


def _predicate(t: sa.Table, p: Predicate) -> sa.ColumnElement[bool]:
    if isinstance(p, Comparison):
        col = t.c[p.column]
        ops = {
            "=": col.__eq__,
            "!=": col.__ne__,
            "<": col.__lt__,
            "<=": col.__le__,
            ">": col.__gt__,
            ">=": col.__ge__,
        }
        return ops[p.op](p.value)  # type: ignore[no-any-return]
    if isinstance(p, InList):
        expr = t.c[p.column].in_(p.values)
        return sa.not_(expr) if p.negated else expr
    if isinstance(p, Between):
        return t.c[p.column].between(p.low, p.high)
    if isinstance(p, AllOf):
        return sa.and_(*(_predicate(t, i) for i in p.items))
    if isinstance(p, AnyOf):
        return sa.or_(*(_predicate(t, i) for i in p.items))
    assert isinstance(p, Not)
    return sa.not_(_predicate(t, p.item))
