"""A :class:`~nodes.stores.base.DatasetStore` on Apache Spark, for data one machine cannot hold.

The dataset is a Parquet location or a catalogue table, read through a ``SparkSession``
on whatever master ``[datasets.spark]`` names (``local[2]`` in tests, ``spark://`` or
``k8s://`` in production; docs/stores.md).  A :class:`QuerySpec` is compiled to DataFrame
operations (``filter``, ``groupBy``, ``agg`` over ``Column`` expressions with literal
values); no SQL text is built, as with SQLAlchemy.  Types, result encoding and checks are
those of every other engine (:mod:`nodes.stores.types`, :mod:`nodes.stores.results`).

One JVM serves a process, so every Spark dataset of a node shares one session and one
master; the session stops when the last dataset using it closes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from datafed.errors import ConfigError
from datafed.query.components import Component
from datafed.query.spec import AllOf, AnyOf, Between, Comparison, InList, Not, Predicate, QuerySpec
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest, NodeError
from nodes.stores.base import Column, GroupRow, check_spec
from nodes.stores.connect import missing_driver
from nodes.stores.results import group_rows
from nodes.stores.sql import db_error
from nodes.stores.types import PATTERNS, literal, python_value

__all__ = ["SparkDataset", "acquire_session", "release_session"]

_TYPES = {
    "ByteType": "integer",
    "ShortType": "integer",
    "IntegerType": "integer",
    "LongType": "integer",
    "FloatType": "real",
    "DoubleType": "real",
    "DecimalType": "real",
    "StringType": "text",
    "VarcharType": "text",
    "CharType": "text",
    "BooleanType": "boolean",
}
_CASTS = {"integer": "bigint", "real": "double", "text": "string"}
#: Defaults for a node's session; ``[datasets.spark] conf`` overrides each.
_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
}
_lock = threading.Lock()
_state: dict[str, Any] = {"session": None, "master": None, "users": 0}


def acquire_session(master: str, conf: Mapping[str, str], app_name: str = "datafed-node") -> Any:
    """The process's ``SparkSession`` on ``master`` (started on first use, then shared)."""
    from pyspark.sql import SparkSession

    with _lock:
        if _state["session"] is not None:
            if _state["master"] != master:
                raise ConfigError(
                    f"Spark datasets of one node must share one master: {_state['master']!r} "
                    f"is running, {master!r} was asked for"
                )
        else:
            builder = SparkSession.builder.master(master).appName(app_name)
            settings = dict(_DEFAULTS)
            if master.startswith("local"):
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no external interface
                # Local Python workers run this interpreter (not whatever python3 PATH finds).
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
                settings["spark.driver.bindAddress"] = "127.0.0.1"
                settings["spark.driver.host"] = "127.0.0.1"
            settings.update(conf)
            for key, value in settings.items():
                builder = builder.config(key, value)
            try:
                _state["session"] = builder.getOrCreate()
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(
                    f"cannot start Spark on {master!r} (Java 17 must be installed): {first}"
                ) from None
            _state["master"] = master
        _state["users"] += 1
        return _state["session"]


def release_session() -> None:
    """Give back one use of the session; the last one stops it."""
    with _lock:
        _state["users"] = max(0, _state["users"] - 1)
        if _state["users"] == 0 and _state["session"] is not None:
            _state["session"].stop()
            _state["session"] = _state["master"] = None


class SparkDataset:
    """One dataset read through Spark (Parquet or a catalogue table)."""

    def __init__(self, cfg: DatasetConfig) -> None:
        try:
            from pyspark.sql import functions
        except ImportError as exc:
            raise missing_driver(cfg, exc) from None
        self.fn = functions
        assert cfg.spark is not None
        src = cfg.spark
        self.cfg = cfg
        self.engine_name = "spark"
        self.spark = acquire_session(src.master, src.conf, src.app_name)
        try:
            self.df = self._read()
            self._open(cfg)
        except BaseException:
            release_session()
            raise

    def _read(self) -> Any:
        src = self.cfg.spark
        assert src is not None
        where = src.parquet or src.catalog_table
        try:
            if src.parquet is not None:
                return self.spark.read.parquet(src.parquet)
            return self.spark.table(src.catalog_table)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"dataset {self.cfg.name!r}: cannot read {where}: {first}") from None

    def _open(self, cfg: DatasetConfig) -> None:
        schema = {f.name: _TYPES.get(type(f.dataType).__name__, "other") for f in self.df.schema}
        exposed = cfg.columns if cfg.columns is not None else list(schema)
        missing = sorted(set(exposed) - set(schema))
        if missing:
            raise ConfigError(f"dataset {cfg.name!r}: columns {missing} not in table")
        self.columns: dict[str, Column] = {}
        for name in exposed:
            ctype = cfg.types.get(name, schema[name])
            if ctype == "other":
                raise ConfigError(
                    f"dataset {cfg.name!r}: column {name!r} has no type datafed compares; "
                    f'declare it in node.toml (types = {{ {name} = "text" }}) or leave it '
                    "out of columns"
                )
            self.columns[name] = Column(name, ctype, schema[name])
        self._c = {n: self._typed(c) for n, c in self.columns.items()}

    def _typed(self, c: Column) -> Any:
        F = self.fn  # noqa: N806 - pyspark's usual name
        col = F.col(c.name)
        if not c.cast:
            return col
        if c.stored == "text":
            col = F.when(col != "", col)  # an empty CSV cell is a missing value, not 0
        if c.type == "boolean":
            if c.stored == "text":
                low = F.lower(col)
                return F.when(low.isin("1", "true"), True).when(low.isin("0", "false"), False)
            return F.when(col == 1, True).when(col == 0, False)
        return col.cast("int" if c.stored == "boolean" else _CASTS[c.type])

    def _run(self, fn: Any) -> Any:
        try:
            return fn()
        except NodeError:
            raise
        except Exception as exc:  # py4j / pyspark errors from the JVM
            raise db_error("spark", exc) from None

    def aggregate(
        self,
        spec: QuerySpec,
        comps: Sequence[Component],
        fixed_point_bits: int,
        bounds: Mapping[str, tuple[float, float]] | None = None,
    ) -> list[GroupRow]:
        """One :class:`GroupRow` per non-empty group, sorted by key."""
        check_spec(self.cfg.name, self.columns, spec)
        F = self.fn  # noqa: N806 - pyspark's usual name
        df = self.df if spec.where is None else self.df.filter(self._predicate(spec.where))
        exprs = [F.count(F.lit(1)).alias("__rows")]
        exprs += [
            self._component(c, (bounds or {}).get(c.column)).alias(f"c{i}")
            for i, c in enumerate(comps)
        ]
        if spec.group_by:
            keys = [self._c[g].alias(f"k{i}") for i, g in enumerate(spec.group_by)]
            res = df.groupBy(*keys).agg(*exprs)
        else:
            res = df.agg(*exprs)
        rows = self._run(lambda: [tuple(r) for r in res.collect()])
        types = [self.columns[g].type for g in spec.group_by]
        return group_rows(rows, types, comps, self.columns, fixed_point_bits)

    def read_rows(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row's values of ``columns``, typed."""
        unknown = sorted(set(columns) - set(self.columns))
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {self.cfg.name!r}")
        sel = self.df.select(*(self._c[c].alias(f"v{i}") for i, c in enumerate(columns)))
        types = [self.columns[c].type for c in columns]
        rows = self._run(lambda: sel.collect())
        return [tuple(python_value(t, v) for t, v in zip(types, r, strict=True)) for r in rows]

    def nonconforming(self, columns: Sequence[str]) -> dict[str, tuple[int, Any]]:
        """Columns whose stored values do not fit their type: ``(count, an example)``."""
        F = self.fn  # noqa: N806 - pyspark's usual name
        checks = [(n, b) for n in columns if (b := self._bad(self.columns[n])) is not None]
        if not checks:
            return {}
        exprs = []
        for name, bad in checks:
            exprs += [F.count(F.when(bad, 1)), F.min(F.when(bad, F.col(name).cast("string")))]
        try:
            row = self.df.agg(*exprs).collect()[0]
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"dataset {self.cfg.name!r}: cannot check column types: {first}"
            ) from None
        return {
            name: (int(row[2 * i]), row[2 * i + 1])
            for i, (name, _) in enumerate(checks)
            if row[2 * i]
        }

    def _bad(self, c: Column) -> Any:
        col = self.fn.col(c.name)
        if not c.cast or c.type == "text" or c.stored == "boolean":
            return None
        if c.type == "real" and c.stored == "integer":
            return None
        if c.stored == "text":
            return col.isNotNull() & (col != "") & ~col.rlike(PATTERNS[c.type])
        if c.type == "integer" and c.stored == "real":
            return col.isNotNull() & (col != self.fn.round(col))
        if c.type == "boolean" and c.stored in ("integer", "real"):
            return col.isNotNull() & ~col.isin(0, 1)
        return col.isNotNull()

    def close(self) -> None:
        """Give back this dataset's use of the shared session."""
        if self.spark is not None:
            self.spark = None
            release_session()

    def _component(self, c: Component, bound: tuple[float, float] | None) -> Any:
        F = self.fn  # noqa: N806 - pyspark's usual name
        if c.kind == "count":
            return F.count(F.lit(1)) if c.column == "*" else F.count(self._c[c.column])
        col = self._c[c.column]
        if self.columns[c.column].type == "boolean":
            col = col.cast("int")
        if c.kind == "bin":
            upper = col <= c.hi if c.closed else col < c.hi
            return F.sum(F.when((col >= c.lo) & upper, 1).otherwise(0))
        if bound is not None:
            lo, hi = bound
            col = F.when(col < lo, F.lit(lo)).when(col > hi, F.lit(hi)).otherwise(col)
        if c.kind == "sum":
            return F.sum(col)
        if c.kind == "sumsq":
            return F.sum(col * col)
        return F.min(col) if c.kind == "min" else F.max(col)

    def _lit(self, column: str, value: object) -> Any:
        return self.fn.lit(literal(self.columns[column].type, column, value))

    def _predicate(self, p: Predicate) -> Any:
        if isinstance(p, Comparison):
            col, v = self._c[p.column], self._lit(p.column, p.value)
            return {
                "=": col == v,
                "!=": col != v,
                "<": col < v,
                "<=": col <= v,
                ">": col > v,
                ">=": col >= v,
            }[p.op]
        if isinstance(p, InList):
            expr = self._c[p.column].isin(*(self._lit(p.column, v) for v in p.values))
            return ~expr if p.negated else expr
        if isinstance(p, Between):
            col = self._c[p.column]
            return col.between(self._lit(p.column, p.low), self._lit(p.column, p.high))
        items = p.items if isinstance(p, (AllOf, AnyOf)) else ()
        if isinstance(p, AllOf):
            out = self._predicate(items[0])
            for i in items[1:]:
                out = out & self._predicate(i)
            return out
        if isinstance(p, AnyOf):
            out = self._predicate(items[0])
            for i in items[1:]:
                out = out | self._predicate(i)
            return out
        assert isinstance(p, Not)
        return ~self._predicate(p.item)
