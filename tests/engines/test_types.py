"""Typed columns (issue 10): TEXT-imported data compares, groups and clamps as its type.

Each of the wrong answers of issue 10 that came from types is reproduced at the store:
on the old store they fail (TEXT compared as text, '2023' not matching 2023).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from datafed.errors import ConfigError
from datafed.query.components import components
from datafed.query.spec import Aggregate, InList, QuerySpec
from datafed.query.sql import parse_sql
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest
from nodes.stores import DataStore

BITS = 16
COLS = ("ward", "year", "cost")


def text_table(path: Path, rows) -> None:
    """What `sqlite3 .import --csv` makes: every column TEXT, every value text."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE visits (ward TEXT, year TEXT, cost TEXT)")
        db.executemany("INSERT INTO visits VALUES (?, ?, ?)", [[str(v) for v in r] for r in rows])


def cfg(path: Path, **extra) -> DatasetConfig:
    return DatasetConfig.model_validate({"name": "visits", "path": str(path), **extra})


ROWS = [
    ("a", 2023, 9.5),
    ("a", 2024, 120.0),
    ("b", 2023, 1000.0),
    ("b", 2023, 70.25),
    ("c", 2024, 5.0),
]
TYPES = {"year": "integer", "cost": "real"}


@pytest.fixture
def text_store(tmp_path):
    text_table(tmp_path / "v.sqlite", ROWS)
    store = DataStore([cfg(tmp_path / "v.sqlite", types=TYPES)])
    yield store
    store.close()


def test_dp_clamping_compares_numbers_not_text(text_store):
    """Issue 10: SUM(cost) clamped to [0, 100] compared TEXT: '1000.0' < '100' as text."""
    spec = parse_sql("SELECT SUM(cost) FROM visits")
    (g,) = text_store.aggregate(spec, components(spec), BITS, {"cost": (0.0, 100.0)})
    want = sum(min(max(c, 0.0), 100.0) for *_, c in ROWS)
    assert g.values[0] / 2**BITS == pytest.approx(want)
    assert want == 9.5 + 100 + 100 + 70.25 + 5


def test_text_year_groups_as_the_declared_integer(text_store):
    """Issue 10: a Paillier domain [2023, 2024] matched no TEXT '2023' key: rows dropped."""
    spec = parse_sql("SELECT year, COUNT(*) FROM visits GROUP BY year")
    groups = text_store.aggregate(spec, components(spec), BITS)
    assert [(g.key, g.rows) for g in groups] == [((2023,), 3), ((2024,), 2)]
    by_key = {g.key: g for g in groups}
    domain = text_store.typed_keys(spec, [(2023,), (2024,)])
    assert [by_key[k].rows for k in domain] == [3, 2]  # the servicer's by_key.get(k) hits
    with pytest.raises(InvalidRequest, match="not a integer"):
        text_store.typed_keys(spec, [("2023",)])


def test_text_and_integer_nodes_give_one_key_type(tmp_path, text_store):
    """Issue 10: plain listed 2023 twice (TEXT '2023' at one node, INTEGER at the other)."""
    from datafed.local import synth

    synth.write_table(
        tmp_path / "i.sqlite",
        "visits",
        (("ward", "TEXT"), ("year", "INTEGER"), ("cost", "REAL")),
        ROWS,
    )
    typed = DataStore([cfg(tmp_path / "i.sqlite")])
    spec = parse_sql("SELECT year, SUM(cost) FROM visits GROUP BY year")
    a = text_store.aggregate(spec, components(spec), BITS)
    b = typed.aggregate(spec, components(spec), BITS)
    assert [g.key for g in a] == [g.key for g in b] == [(2023,), (2024,)]
    assert {type(g.key[0]) for g in a + b} == {int}
    assert [g.values for g in a] == [g.values for g in b]
    typed.close()


def test_literals_compare_as_the_column_type(text_store):
    for sql, n in [
        ("SELECT COUNT(*) FROM visits WHERE year = 2023", 3),
        ("SELECT COUNT(*) FROM visits WHERE year = '2023'", 3),
        ("SELECT COUNT(*) FROM visits WHERE cost > 80", 2),  # as text: '9.5' > '80'
        ("SELECT COUNT(*) FROM visits WHERE cost BETWEEN 9 AND 71", 2),
        ("SELECT COUNT(*) FROM visits WHERE year IN (2024, '2023') AND ward != 'c'", 4),
    ]:
        spec = parse_sql(sql)
        (g,) = text_store.aggregate(spec, components(spec), BITS)
        assert g.rows == n, sql
    for sql, msg in [
        ("SELECT COUNT(*) FROM visits WHERE year = 'twenty'", "not a integer"),
        ("SELECT COUNT(*) FROM visits WHERE ward = 5", "compare it with a quoted string"),
        ("SELECT SUM(ward) FROM visits", "needs a numeric column"),
    ]:
        spec = parse_sql(sql)
        with pytest.raises(InvalidRequest, match=msg):
            text_store.aggregate(spec, components(spec), BITS)


def test_undeclared_text_is_refused_where_it_would_be_wrong(tmp_path):
    """Without declared types, serve refuses the policy instead of answering wrongly."""
    text_table(tmp_path / "v.sqlite", ROWS)
    policy = {
        "group_domains": {"year": [2023, 2024]},
        "dp": {"epsilon_per_query": 1, "budget_epsilon": 5, "bounds": {"cost": [0, 100]}},
    }
    with pytest.raises(ConfigError) as info:
        DataStore([cfg(tmp_path / "v.sqlite", policy=policy)])
    assert "group_domains.year holds 2023 (int) but column 'year' is text" in str(info.value)
    assert "(and 1 more)" in str(info.value)
    store = DataStore([cfg(tmp_path / "v.sqlite")])
    spec = parse_sql("SELECT SUM(cost) FROM visits")
    with pytest.raises(
        InvalidRequest, match="SUM\\(cost\\) needs a numeric column; 'cost' is text"
    ):
        store.aggregate(spec, components(spec), BITS)
    store.close()


@pytest.mark.parametrize(
    ("value", "declared", "shown"),
    [
        ("12abc", "integer", "'12abc'"),
        ("2023.5", "integer", "'2023.5'"),
        ("1,5", "real", "'1,5'"),
        ("yes", "boolean", "'yes'"),
    ],
)
def test_nonconforming_values_are_refused_with_column_and_example(tmp_path, value, declared, shown):
    """SQLite's CAST would make '12abc' 12 and '2023.5' 2023: refused at open instead."""
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        db.execute("CREATE TABLE visits (ward TEXT, x TEXT)")
        db.executemany(
            "INSERT INTO visits VALUES (?, ?)", [("a", "1"), ("b", value), ("c", ""), ("d", None)]
        )
    with pytest.raises(ConfigError) as info:
        DataStore([cfg(tmp_path / "v.sqlite", types={"x": declared})])
    msg = str(info.value)  # what serve says: no stored value (it reaches logs)
    assert f"column 'x' is declared {declared} but stored values are not" in msg
    assert shown not in msg and "\n" not in msg
    # check-config, on the operator's console, shows the count and an example
    from nodes.stores import open_dataset
    from nodes.stores.checks import problems

    config = cfg(tmp_path / "v.sqlite", types={"x": declared})
    store = open_dataset(config)
    try:
        (line,) = problems(config, store, values=True)
    finally:
        store.close()
    assert f"column 'x' is declared {declared} but 1 stored value(s) are not, e.g. {shown}" in line
    # A column outside allowed_columns is not checked (and cannot be queried).
    DataStore(
        [cfg(tmp_path / "v.sqlite", types={"x": declared}, policy={"allowed_columns": ["ward"]})]
    ).close()


def test_integer_column_holding_text_is_refused(tmp_path):
    """SQLite keeps 'n/a' in an INTEGER column as text: SUM would count it as 0."""
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        db.execute("CREATE TABLE visits (n INTEGER)")
        db.executemany("INSERT INTO visits VALUES (?)", [(1,), ("n/a",)])
    with pytest.raises(
        ConfigError, match=r"column 'n' is declared integer but stored values are not"
    ):
        DataStore([cfg(tmp_path / "v.sqlite")])


def test_limits_are_clear_refusals_not_database_errors(text_store):
    """Issue 10: 32 aggregates hit SQLite's column limit as INTERNAL; 2M IN literals."""
    aggs = tuple(
        Aggregate(
            func="histogram", column="cost", bins=tuple(float(j * 1000 + i) for i in range(65))
        )
        for j in range(32)
    )
    spec = QuerySpec(dataset="visits", aggregates=aggs)
    with pytest.raises(InvalidRequest, match="at most 512 per query"):
        text_store.aggregate(spec, components(spec), BITS)
    from datafed.query.spec import AnyOf

    many = AnyOf(
        items=tuple(
            InList(column="year", values=tuple(range(i * 1000, i * 1000 + 1000))) for i in range(11)
        )
    )
    spec = QuerySpec(
        dataset="visits", aggregates=(Aggregate(func="count", column="*"),), where=many
    )
    with pytest.raises(InvalidRequest, match="at most 10000"):
        text_store.aggregate(spec, (), BITS)


def test_engine_errors_are_mapped_not_internal(tmp_path):
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        db.execute("CREATE TABLE visits (n INTEGER)")
        db.executemany("INSERT INTO visits VALUES (?)", [(2**62,), (2**62,)])
    store = DataStore([cfg(tmp_path / "v.sqlite")])
    spec = parse_sql("SELECT SUM(n) FROM visits")
    with pytest.raises(InvalidRequest, match="overflowed the node's sqlite number type"):
        store.aggregate(spec, components(spec), BITS)
    store.close()


def test_boolean_and_null_keys(tmp_path):
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        db.execute("CREATE TABLE visits (flag TEXT, v TEXT)")
        db.executemany(
            "INSERT INTO visits VALUES (?, ?)",
            [("true", "1"), ("0", "2"), ("FALSE", ""), (None, "4"), ("1", "5")],
        )
    store = DataStore([cfg(tmp_path / "v.sqlite", types={"flag": "boolean", "v": "integer"})])
    spec = parse_sql("SELECT flag, SUM(v), COUNT(v) FROM visits GROUP BY flag")
    groups = store.aggregate(spec, components(spec), BITS)
    assert [(g.key, g.values[0] >> BITS, g.values[1]) for g in groups] == [
        ((False,), 2, 1),
        ((True,), 6, 2),
        ((None,), 4, 1),
    ]
    spec = parse_sql("SELECT COUNT(*) FROM visits WHERE flag = TRUE")
    assert store.aggregate(spec, (), BITS)[0].rows == 2
    store.close()


def test_data_changed_after_the_check_is_a_clear_node_error(tmp_path):
    """An agency writing 'n/a' into its SQLite file under a running node: a clear error.

    (Values are checked when the node starts and by check-config; what changes later is
    caught where it cannot be converted, never as a traceback.)
    """
    from datafed.local import synth
    from nodes.errors import NodeError

    synth.write_table(
        tmp_path / "i.sqlite", "visits", (("ward", "TEXT"), ("year", "INTEGER")), [("a", 2023)]
    )
    store = DataStore([cfg(tmp_path / "i.sqlite")])
    with sqlite3.connect(tmp_path / "i.sqlite") as db:
        db.execute("INSERT INTO visits VALUES ('d', 'n/a')")
    spec = parse_sql("SELECT year, COUNT(*) FROM visits GROUP BY year")
    with pytest.raises(NodeError, match=r"does not fit its column's type \(run check-config\)"):
        store.aggregate(spec, components(spec), BITS)
    store.close()
