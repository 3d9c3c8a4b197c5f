"""The Spark store: typed text Parquet, catalogue tables, row ids, one master per process."""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafed.errors import ConfigError
from datafed.query.components import Component, components
from datafed.query.sql import parse_sql
from nodes.config import DatasetConfig
from nodes.stores import DataStore


def spark_cfg(**source) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {"name": "visits", "spark": {"master": "local[2]", **source}}
    )


def test_text_parquet_with_declared_types(tmp_path, spark):
    path = tmp_path / "v.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [1, 2, 3, 4],
                "year": ["2023", "2024", "2023", ""],
                "cost": ["1.5", "1e2", "7", "3"],
            }
        ),
        path,
    )
    cfg = spark_cfg(parquet=str(path)).model_copy(
        update={"types": {"year": "integer", "cost": "real"}}
    )
    store = DataStore([cfg])
    spec = parse_sql(
        "SELECT year, SUM(cost), COUNT(year) FROM visits WHERE cost < 50 GROUP BY year"
    )
    comps = components(spec)  # sum(cost), count(cost) (for SQL's NULL), count(year)
    n_year = comps.index(Component("count", "year"))
    got = [(g.key, g.values[0] / 2**16, g.values[n_year]) for g in store.aggregate(spec, comps, 16)]
    assert got == [((2023,), 8.5, 2), ((None,), 3.0, 0)]
    store.close()
    pq.write_table(pa.table({"id": [1, 2], "year": ["2023", "MMXXIV"], "cost": ["1", "2"]}), path)
    with pytest.raises(
        ConfigError,
        match=r"column 'year' is declared integer but stored values are not",
    ):
        DataStore([cfg])


def test_catalogue_table(spark):
    spark.createDataFrame(
        [(2023, 2.0), (2024, 3.0), (2024, 4.0)], "year long, cost double"
    ).createOrReplaceTempView("visits_view")
    store = DataStore([spark_cfg(catalog_table="visits_view")])
    assert store.column_types("visits") == {"year": "integer", "cost": "real"}
    spec = parse_sql("SELECT year, SUM(cost) FROM visits GROUP BY year")
    assert [(g.key, g.rows) for g in store.aggregate(spec, components(spec), 16)] == [
        ((2023,), 1),
        ((2024,), 2),
    ]
    store.close()
    with pytest.raises(ConfigError, match="cannot read nope_view"):
        DataStore([spark_cfg(catalog_table="nope_view")])


def test_one_master_per_process_and_missing_driver(tmp_path, spark, monkeypatch):
    pq.write_table(pa.table({"year": [2023]}), tmp_path / "v.parquet")
    other = DatasetConfig.model_validate(
        {
            "name": "visits",
            "spark": {"master": "spark://10.9.9.9:7077", "parquet": str(tmp_path / "v.parquet")},
        }
    )
    with pytest.raises(ConfigError, match="must share one master"):
        DataStore([other])
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(
        ConfigError, match=r"pyspark is not installed .*pip install 'datafed\[spark\]'"
    ):
        DataStore([spark_cfg(parquet=str(tmp_path / "v.parquet"))])


def test_config_refuses_ambiguous_sources():
    with pytest.raises(ValueError, match="exactly one of 'parquet' or 'catalog_table'"):
        spark_cfg()
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        DatasetConfig.model_validate({"name": "v", "path": "x.duckdb", "spark": {"parquet": "x"}})
    with pytest.raises(ValueError, match="needs a 'url' or 'spark'"):
        DatasetConfig.model_validate({"name": "v", "path": "x.duckdb", "engine": "postgresql"})
