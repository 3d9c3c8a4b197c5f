"""PostgreSQL for real: a server started by the test session, credentials never inline."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa

from datafed.errors import ConfigError
from datafed.query.components import components
from datafed.query.sql import parse_sql
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest
from nodes.stores import DataStore

COLUMNS = (("ward", "TEXT"), ("year", "BIGINT"), ("cost", "DOUBLE PRECISION"))
ROWS = [("a", 2023, 1.5), ("b", 2024, 2.5), ("b", 2024, None)]


@pytest.fixture(scope="module")
def url(pg):
    return pg.create_table(
        "pgtest", "visits", COLUMNS, ROWS, reader="pgreader", password="s3cret-Pg"
    )


def ds(url: str, **kw) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "visits", "url": url, **kw})


def test_password_from_env_or_file(url, tmp_path, monkeypatch):
    monkeypatch.setenv("WATER_NORTH_PG", "s3cret-Pg")
    (tmp_path / "pg").write_text("s3cret-Pg\n")
    for cfg in (
        ds(url, password_env="WATER_NORTH_PG"),
        DatasetConfig.model_validate(
            {"name": "visits", "url": url, "password_file": "pg"}, context={"base_dir": tmp_path}
        ),
    ):
        store = DataStore([cfg])
        assert store.engine("visits") == "postgresql"
        spec = parse_sql("SELECT year, SUM(cost), COUNT(*) FROM visits GROUP BY year")
        got = [
            (g.key, g.rows, g.values[0] / 2**16)
            for g in store.aggregate(spec, components(spec), 16)
        ]
        assert got == [((2023,), 1, 1.5), ((2024,), 2, 2.5)]
        store.close()


def test_credential_errors_are_one_line_and_never_show_the_password(url, tmp_path, monkeypatch):
    monkeypatch.delenv("WATER_NORTH_PG", raising=False)
    with pytest.raises(
        ConfigError, match="environment variable WATER_NORTH_PG \\(password_env\\) is not set"
    ):
        DataStore([ds(url, password_env="WATER_NORTH_PG")])
    missing = DatasetConfig.model_validate(
        {"name": "visits", "url": url, "password_file": "nope"}, context={"base_dir": tmp_path}
    )
    with pytest.raises(ConfigError, match=r"password_file .*nope: No such file"):
        DataStore([missing])
    monkeypatch.setenv("WATER_NORTH_PG", "wrong-Secret-77")
    with pytest.raises(ConfigError) as info:
        DataStore([ds(url, password_env="WATER_NORTH_PG")])
    assert "wrong-Secret-77" not in str(info.value) and "\n" not in str(info.value)
    assert "password authentication failed" in str(info.value)


def test_missing_driver_names_the_extra(url, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.setenv("WATER_NORTH_PG", "s3cret-Pg")
    with pytest.raises(ConfigError) as info:
        DataStore([ds(url, password_env="WATER_NORTH_PG")])
    msg = str(info.value)
    assert "psycopg (PostgreSQL driver) is not installed" in msg
    assert "pip install 'datafed[postgres]'" in msg and "\n" not in msg


def test_the_node_reads_only(url, monkeypatch):
    monkeypatch.setenv("WATER_NORTH_PG", "s3cret-Pg")
    store = DataStore([ds(url, password_env="WATER_NORTH_PG")])
    engine = store.dataset("visits").engine  # type: ignore[attr-defined]
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM visits"))
    spec = parse_sql("SELECT SUM(year) FROM visits WHERE ward IN ('a', 'b')")
    assert store.aggregate(spec, components(spec), 16)[0].values[0] == (2023 + 2024 * 2) << 16
    spec = parse_sql("SELECT COUNT(*) FROM visits WHERE ward = 5")
    with pytest.raises(
        InvalidRequest, match="quoted string"
    ):  # refused, not a PostgreSQL type error
        store.aggregate(spec, (), 16)
    store.close()


def test_a_database_that_goes_away_is_unavailable_not_internal(monkeypatch):
    from nodes.errors import Unavailable
    from tests.engines.pg import start_pg

    server = start_pg()
    try:
        url = server.create_table(
            "gone", "visits", COLUMNS, ROWS, reader="gonereader", password="pw-gone"
        )
        monkeypatch.setenv("GONE_PG", "pw-gone")
        store = DataStore([ds(url, password_env="GONE_PG")])
    finally:
        server.stop()
    spec = parse_sql("SELECT COUNT(*) FROM visits")
    with pytest.raises(Unavailable, match="the node's postgresql database is unavailable") as info:
        store.aggregate(spec, (), 16)
    assert info.value.code.name == "UNAVAILABLE"
    store.close()
