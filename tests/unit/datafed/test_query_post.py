"""The client's side of SQL: post-processing clauses, exact decimals, JSON, event loops."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from decimal import Decimal

import pytest

from datafed.client.federation import run_sync
from datafed.client.nodeinfo import ColumnInfo
from datafed.errors import QueryError
from datafed.query import post
from datafed.query.components import (
    Component,
    components,
    encode_fixed,
    finalize_exact,
    fixed_decimal,
)
from datafed.query.result import QueryResult, dumps_exact
from datafed.query.sql import parse_query, parse_sql

BITS = 16


@pytest.mark.parametrize(
    ("value", "roundings", "text"),
    [
        (encode_fixed(30810.07, BITS), 1, "30810.07"),  # not 30810.07000732421875
        (encode_fixed(0.1, BITS), 1, "0.1"),
        (encode_fixed(-2.5, BITS), 1, "-2.5"),
        (7 << BITS, 1, "7"),
        (0, 1, "0"),
        (-1, 1, "-0.00002"),  # one unit: 1/65536 = 0.0000152587890625
        (1, 1, "0.00002"),
        (sum(encode_fixed(x, BITS) for x in (0.1, 0.2, 30810.07)), 1, "30810.37001"),
        (sum(encode_fixed(x, BITS) for x in (0.1, 0.2, 30810.07)), 3, "30810.37"),
    ],
)
def test_fixed_decimal_is_the_shortest_decimal_within_the_rounding(value, roundings, text):
    got = fixed_decimal(value, BITS, roundings)
    assert str(got) == text
    exact = Decimal(value) / (1 << BITS)
    assert abs(got - exact) < Decimal(roundings) / (2 << BITS)


def test_components_carry_non_null_counts_and_finalize_reads_null():
    spec = parse_sql("SELECT SUM(x), MIN(x), MAX(y), AVG(y), COUNT(*) FROM t")
    assert [c.label for c in components(spec)] == [
        "sum(x)",
        "count(x)",
        "min(x)",
        "max(y)",
        "count(y)",
        "sum(y)",
        "count(*)",
    ]
    totals = dict.fromkeys(components(spec), 0)
    totals[Component("count", "*")] = 4  # four rows, every x and y NULL
    assert finalize_exact(spec, totals, BITS) == (None, None, None, None, 4)
    totals[Component("count", "x")] = 1
    totals[Component("sum", "x")] = encode_fixed(-0.75, BITS)
    assert finalize_exact(spec, totals, BITS)[:2] == (Decimal("-0.75"), Decimal("0"))


def test_dumps_exact_writes_decimals_with_their_digits():
    text = dumps_exact({"r": [Decimal("30810.07"), Decimal("1E+3"), Decimal("-0"), 2.5, None]})
    assert text == '{"r": [30810.07, 1000, 0, 2.5, null]}'
    assert json.loads(text, parse_float=Decimal)["r"][0] == Decimal("30810.07")
    with pytest.raises(ValueError):
        dumps_exact(Decimal("NaN"))
    with pytest.raises(ValueError):
        dumps_exact(float("inf"))


def test_clauses_parse_into_the_spec_and_the_post_processing():
    q = parse_query(
        "SELECT zone AS ward, SUM(cost) AS total, HISTOGRAM(cost, 0, 5, 10) AS h FROM t "
        "GROUP BY zone HAVING COUNT(*) > 3 AND NOT total IS NULL "
        "ORDER BY 2 DESC, ward NULLS LAST LIMIT 4 OFFSET 1"
    )
    assert [a.label for a in q.spec.aggregates] == ["sum(cost)", "histogram(cost)", "count(*)"]
    assert [o.name for o in q.post.outputs] == ["ward", "total", "h[0,5)", "h[5,10]"]
    assert q.post.order == (
        post.OrderKey("sum(cost)", desc=True, nulls_first=False),
        post.OrderKey("zone", desc=False, nulls_first=False),
    )
    assert (q.post.limit, q.post.offset) == (4, 1)
    assert q.post.having == post.And(
        (post.Cmp("count(*)", ">", 3), post.IsNull("sum(cost)", negated=True))
    )
    # the same aggregate twice is computed once
    twice = parse_query("SELECT SUM(x), SUM(x) AS again FROM t ORDER BY SUM(x)")
    assert len(twice.spec.aggregates) == 1 and len(twice.post.outputs) == 2


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT SUM(x) FROM t ORDER BY 3", "not a position"),
        (
            "SELECT zone, SUM(x) FROM t GROUP BY zone HAVING HISTOGRAM(x, 0, 1) > 1",
            "HISTOGRAM in HAVING",
        ),
        ("SELECT SUM(x) FROM t LIMIT 'a'", "non-negative integer"),
        ("SELECT SUM(x) FROM t HAVING SUM(x) > SUM(y)", "literal"),
        ("SELECT SUM(x) FROM t HAVING x > 1", "none of them"),
        ("SELECT COUNT(DISTINCT x) FROM t", "distinct counts do not add up"),
        ("SELECT SUM(CASE WHEN x = 1 THEN 1 END) FROM t", "CASE"),
        ("SELECT VAR_POP(x) FROM t", "VAR_POP"),
        ("SELECT SUM(x) OVER () FROM t", "window function"),
        ("WITH a AS (SELECT 1) SELECT SUM(x) FROM a", "WITH"),
        ("SELECT DISTINCT SUM(x) FROM t", "SELECT DISTINCT"),
    ],
)
def test_refusals_name_the_construct_and_list_the_subset(sql, fragment):
    with pytest.raises(QueryError) as info:
        parse_query(sql)
    assert fragment in str(info.value)
    if "supported" in str(info.value):
        assert "datafed supports SELECT" in str(info.value)


VALUES = [None, -1, 0, 2.5, 3, 7]


def _cond(rng: random.Random, depth: int = 0) -> tuple[post.Cond, str]:
    pick = rng.randrange(7 if depth < 2 else 4)
    if pick == 0:
        op, v = rng.choice(["=", "!=", "<", "<=", ">", ">="]), rng.choice(VALUES[1:])
        return post.Cmp("a", op, v), f"a {op} {v}"
    if pick == 1:
        vs = tuple(rng.sample(VALUES, 2))
        neg = rng.random() < 0.5
        text = ", ".join("NULL" if v is None else str(v) for v in vs)
        return post.InSet("a", vs, neg), f"a {'NOT ' if neg else ''}IN ({text})"
    if pick == 2:
        lo, hi = sorted(rng.sample(VALUES[1:], 2))
        return post.Between("a", lo, hi), f"a BETWEEN {lo} AND {hi}"
    if pick == 3:
        neg = rng.random() < 0.5
        return post.IsNull("a", neg), f"a IS {'NOT ' if neg else ''}NULL"
    if pick == 6:
        inner, text = _cond(rng, depth + 1)
        return post.Not(inner), f"NOT ({text})"
    (x, tx), (y, ty) = _cond(rng, depth + 1), _cond(rng, depth + 1)
    if pick == 4:
        return post.And((x, y)), f"({tx}) AND ({ty})"
    return post.Or((x, y)), f"({tx}) OR ({ty})"


def test_having_uses_sqlites_three_valued_logic():
    db = sqlite3.connect(":memory:")
    rng = random.Random(14)
    for _ in range(300):
        cond, text = _cond(rng)
        for v in VALUES:
            want = db.execute(f"SELECT {text.replace('a', '?')}", [v] * text.count("a")).fetchone()[
                0
            ]
            got = post.evaluate(cond, lambda _c, v=v: v)
            assert got == (None if want is None else bool(want)), (text, v)


def test_post_processing_keeps_suppressed_rows_and_sorts_like_sqlite():
    r = QueryResult(
        columns=("zone", "count(*)"),
        rows=(("a", 5), ("b", None), ("c", 2), (None, 9)),
        suppressed=(False, True, False, False),
        protection="plain",
        job_id="j",
        nodes=(),
    )
    p = parse_query(
        "SELECT zone AS z, COUNT(*) AS n FROM t GROUP BY zone HAVING COUNT(*) > 3 ORDER BY n"
    )
    out = r.postprocess(p.post)
    assert out.columns == ("z", "n")
    assert out.rows == (("b", None), ("a", 5), (None, 9))  # NULL first ascending, as SQLite
    assert out.suppressed == (True, False, False)  # a suppressed row is never filtered out


async def test_run_sync_inside_a_running_loop():
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(answer()) == 42  # asyncio.run here would raise


# ------------------------------------------------- HAVING's names and literals, as SQLite's
#: (name, SQLite type, datafed type): a column of every type, NULLs in each.
TYPED = (
    ("zone", "TEXT", "text"),
    ("year", "INTEGER", "integer"),
    ("cost", "REAL", "real"),
    ("open", "BOOLEAN", "boolean"),
    ("visits", "INTEGER", "integer"),
)
DESCRIBED = {"node-a": [ColumnInfo(n, t) for n, _, t in TYPED]}
NUMBERS = ["3", "2.0", "1.0", "0", "1", "-1.5", "2.5", "2022.5", "2023", "NULL"]
LITERALS = [
    *NUMBERS, "'5'", "'2023'", "' 2023 '", "'2023.0'", "'2.5'", "'n'", "'m'", "'abc'", "'1'", "'true'",
    "TRUE", "FALSE",
]  # fmt: skip
AGGS = ["COUNT(*)", "COUNT(cost)", "SUM(visits)", "SUM(cost)", "AVG(cost)", "MIN(visits)"]
AGGS += ["MAX(open)", "MAX(cost)"]
#: Aliases, some of them columns of the table (SQL reads the column in HAVING).
ALIASES = ["total", "n", "cost", "visits", "Visits", "year", "Zone", "avg_c"]


def _typed_db(rng: random.Random) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (" + ", ".join(f"{n} {t}" for n, t, _ in TYPED) + ")")
    rows = [
        (
            rng.choice(["n", "e", "s", None]),
            rng.choice([2022, 2023, 2024, None]),
            rng.choice([-1.5, 0.0, 2.5, 4.0, None]),
            rng.choice([0, 1, None]),
            rng.choice([-2, 0, 1, 3, 7, None]),
        )
        for _ in range(80)
    ]
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    return db


def _released(db: sqlite3.Connection, sql: str) -> tuple[QueryResult, post.PostProcess]:
    """What the nodes would release for ``sql`` (SQLite's groups), and its bound post."""
    parsed = parse_query(sql)
    spec = parsed.spec
    labels = [lb for a in spec.aggregates for lb in a.labels]
    group = ", ".join(spec.group_by)
    text = f"SELECT {', '.join([*spec.group_by, *labels])} FROM t"
    rows = db.execute(text + (f" GROUP BY {group}" if group else "")).fetchall()
    types = {n: t for n, _, t in TYPED}
    width = len(spec.group_by)
    typed = [
        tuple(
            bool(v) if i < width and v is not None and types[spec.group_by[i]] == "boolean" else v
            for i, v in enumerate(r)
        )
        for r in rows
    ]
    result = QueryResult(
        columns=(*spec.group_by, *labels),
        rows=tuple(typed),
        protection="plain",
        job_id="j",
        nodes=("node-a",),
    )
    return result, parsed.post.bind(DESCRIBED)


def _norm(rows) -> list[tuple]:
    return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]


def _agrees(db: sqlite3.Connection, sql: str) -> str | None:
    """``None`` when datafed answers ``sql`` as SQLite does; the refusal when it refuses."""
    try:
        result, bound = _released(db, sql)
    except QueryError as exc:
        return str(exc)
    got = _norm(result.postprocess(bound).rows)
    want = _norm(db.execute(sql).fetchall())  # SQLite errs where datafed should refuse
    if "ORDER BY" not in sql:
        key = lambda r: [(v is None, str(v)) for v in r]  # noqa: E731
        got, want = sorted(got, key=key), sorted(want, key=key)
    assert got == want, sql
    return None


AGREE = [
    # a literal of another type, read as SQLite's column affinity reads it
    "SELECT year, COUNT(*) FROM t GROUP BY year HAVING year = '2023'",
    "SELECT year, COUNT(*) FROM t GROUP BY year HAVING year IN (' 2023 ', 2022, NULL)",
    "SELECT year, COUNT(*) FROM t GROUP BY year HAVING year BETWEEN '2022' AND 2023.5",
    "SELECT year, COUNT(*) FROM t GROUP BY year HAVING year > 2022.5",
    "SELECT cost, COUNT(*) FROM t GROUP BY cost HAVING cost > 0 AND cost != '2.5'",
    "SELECT open, COUNT(*) FROM t GROUP BY open HAVING open = TRUE",
    "SELECT open, COUNT(*) FROM t GROUP BY open HAVING open = 1 OR open != '1'",
    "SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING zone > 'm'",
    # a real against an integer count, NULL
    "SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING COUNT(*) >= 20.0",
    "SELECT zone, year, COUNT(*) FROM t GROUP BY zone, year HAVING COUNT(*) = 5.0",
    "SELECT zone, SUM(visits) FROM t GROUP BY zone HAVING SUM(visits) = NULL",
    "SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING COUNT(*) NOT IN (NULL, 1)",
    "SELECT zone, MAX(open) FROM t GROUP BY zone HAVING MAX(open) = TRUE",
    "SELECT year, MIN(visits) FROM t GROUP BY year HAVING MIN(visits) < 0.5",
    # aliases: no column of that name; ORDER BY reads an alias before a column
    "SELECT zone AS ward, SUM(visits) AS total FROM t GROUP BY zone HAVING total > 3 "
    "AND ward IS NOT NULL",
    "SELECT zone, SUM(visits) AS cost FROM t GROUP BY zone ORDER BY cost DESC, zone LIMIT 3",
    "SELECT year, COUNT(*) AS N FROM t GROUP BY year HAVING n > 10 ORDER BY N, year",
    "SELECT zone AS Year, COUNT(*) FROM t GROUP BY zone ORDER BY year, 2",
]
REFUSE = [
    # an alias that is also a column: SQL reads the column (one arbitrary row's value)
    ("SELECT zone, SUM(cost) AS visits FROM t GROUP BY zone HAVING visits > 3", "arbitrary"),
    ("SELECT zone, SUM(cost) AS Visits FROM t GROUP BY zone HAVING VISITS > 3", "arbitrary"),
    ("SELECT zone, SUM(cost) AS cost FROM t GROUP BY zone HAVING cost > 3", "arbitrary"),
    # GROUP BY reads an alias first in SQLite
    ("SELECT year AS zone, COUNT(*) FROM t GROUP BY zone, year", "GROUP BY zone"),
    ("SELECT zone, SUM(visits) AS Zone FROM t GROUP BY zone", "GROUP BY zone"),
    # SQLite compares these as text with numbers: every number sorts first
    ("SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING COUNT(*) > '5'", "as a number"),
    ("SELECT zone, MIN(visits) FROM t GROUP BY zone HAVING MIN(visits) IN (1, '3')", "number"),
    ("SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING zone = 5", "quoted string"),
    # what WHERE refuses
    ("SELECT year, COUNT(*) FROM t GROUP BY year HAVING year = 'abc'", "write a integer"),
    ("SELECT year, COUNT(*) FROM t GROUP BY year HAVING year = TRUE", "write a number"),
    ("SELECT open, COUNT(*) FROM t GROUP BY open HAVING open = 'true'", "TRUE, FALSE"),
    ("SELECT open, COUNT(*) FROM t GROUP BY open HAVING open > FALSE", "boolean"),
    ("SELECT zone, COUNT(*) FROM t GROUP BY zone HAVING COUNT(*) = TRUE", "write a number"),
    ("SELECT zone, MIN(visits) FROM t GROUP BY zone HAVING MIN(visits) = TRUE", "number"),
]


def _random_having(rng: random.Random) -> str:
    group = rng.choice([["zone"], ["year"], ["open"], ["cost"], ["zone", "year"]])
    aggs = rng.sample(AGGS, rng.randint(1, 3))
    select, names = [], list(group)
    for item in [*group, *aggs]:
        if rng.random() < 0.4:
            alias = rng.choice(ALIASES)
            select.append(f"{item} AS {alias}")
            names.append(alias)
        else:
            select.append(item)
    leaves = []
    for _ in range(rng.randint(1, 2)):
        target = rng.choice([*names, *AGGS])
        form = rng.randrange(4)
        a, b = (rng.choice(LITERALS if rng.random() < 0.4 else NUMBERS) for _ in "ab")
        if form == 0:
            leaves.append(f"{target} {rng.choice(['=', '!=', '<', '<=', '>', '>='])} {a}")
        elif form == 1:
            leaves.append(f"{target} {rng.choice(['', 'NOT '])}IN ({a}, {b})")
        elif form == 2:
            leaves.append(f"{target} BETWEEN {a} AND {b}")
        else:
            leaves.append(f"{target} IS {rng.choice(['', 'NOT '])}NULL")
    having = rng.choice([" AND ", " OR "]).join(leaves)
    order = f" ORDER BY {', '.join(group)}" if rng.random() < 0.5 else ""
    return f"SELECT {', '.join(select)} FROM t GROUP BY {', '.join(group)} HAVING {having}{order}"


def test_having_resolves_names_and_coerces_literals_like_sqlite():
    """HAVING answers as SQLite does, or is refused before anything is sent -- never
    another answer: literals of other types than their column's, NULL, aliases that
    shadow columns, names in any case."""
    rng = random.Random(17)
    db = _typed_db(rng)
    for sql in AGREE:
        assert _agrees(db, sql) is None, sql
    for sql, fragment in REFUSE:
        refusal = _agrees(db, sql)
        assert refusal is not None and fragment in refusal, (sql, refusal)
    compared = 0
    for _ in range(400):
        sql = _random_having(rng)
        refusal = _agrees(db, sql)  # SQLite's answer when datafed answers
        compared += refusal is None
        if refusal is not None:  # a clear refusal, in SQL's words
            assert any(w in refusal for w in ("HAVING", "GROUP BY", "boolean")), refusal
    assert compared > 150  # many random cases are answered, not refused
    # a HAVING whose literals need the columns' types is never run unbound
    r, _ = _released(db, AGREE[0])
    with pytest.raises(QueryError, match=r"PostProcess\.bind"):
        r.postprocess(parse_query(AGREE[0]).post)


@pytest.mark.parametrize(
    ("described", "fragment"),
    [
        ({"a": [ColumnInfo("year", "integer")], "b": [ColumnInfo("year", "text")]}, "differ"),
        ({"a": [ColumnInfo("year", "")]}, "node a does not report"),
        ({"a": [ColumnInfo("zone", "text")]}, "no node describes"),
    ],
)
def test_bind_needs_one_type_per_column_from_the_nodes(described, fragment):
    parsed = parse_query("SELECT year, COUNT(*) FROM t GROUP BY year HAVING year = '2023'")
    with pytest.raises(QueryError, match=fragment):
        parsed.post.bind(described)
    bound = parsed.post.bind({"a": [ColumnInfo("YEAR", "integer")], "b": []})
    assert bound.having == post.Cmp("year", "=", 2023)  # names ignore case, as SQL's


# ------------------------------------------------------------ LIMIT's cut and the marks
#: A combined result: ward b suppressed (values NULL), the remainder group (key NULL).
MARKED = QueryResult(
    columns=("zone", "count(*)"),
    rows=(("a", 5), ("b", None), ("c", 2), ("d", 7), (None, 9)),
    suppressed=(False, True, False, False, False),
    remainder=(False, False, False, False, True),
    protection="plain",
    job_id="j",
    nodes=("node-a",),
)


@pytest.mark.parametrize(
    "tail",
    [
        "ORDER BY n DESC LIMIT 2",  # the suppressed row (NULL) sorts last and is cut
        "ORDER BY n LIMIT 2",  # ... first, and is kept
        "ORDER BY n DESC NULLS FIRST LIMIT 3 OFFSET 1",
        "ORDER BY zone LIMIT 0",
        "HAVING COUNT(*) > 4 ORDER BY zone DESC LIMIT 1",
        "ORDER BY n LIMIT 2 OFFSET 9",
        "ORDER BY zone LIMIT 10",
        "ORDER BY zone",
    ],
)
def test_limit_reports_what_it_cut(tail):
    """LIMIT and OFFSET never cut silently: the result counts what HAVING kept and they
    left out, suppressed and remainder rows ordered, cut and counted like any row."""
    sql = f"SELECT zone, COUNT(*) AS n FROM t GROUP BY zone {tail}"
    out = MARKED.postprocess(parse_query(sql).post)
    db = sqlite3.connect(":memory:")  # SQLite over the same groups: what it returns, cuts
    db.execute("CREATE TABLE r (zone TEXT, n INTEGER)")
    db.executemany("INSERT INTO r VALUES (?, ?)", MARKED.rows)
    having = "WHERE n > 4 OR n IS NULL" if "HAVING" in tail else ""  # suppressed: kept
    order = tail[tail.index("ORDER BY") :]
    want = db.execute(f"SELECT zone, n FROM r {having} {order}").fetchall()
    every = db.execute(f"SELECT COUNT(*) FROM r {having}").fetchone()[0]
    assert [tuple(r) for r in out.rows] == want
    assert out.cut_by_limit == every - len(want)
    flags = {r[0]: (s, m) for r, s, m in zip(MARKED.rows, *MARKED.flags(), strict=True)}
    assert list(zip(out.suppressed, out.remainder, strict=True)) == [flags[r[0]] for r in want]
    again = out.postprocess(post.PostProcess.identity(out.columns))
    assert again.cut_by_limit == out.cut_by_limit  # later post-processing keeps the count


def test_marks_reach_table_json_and_pandas(monkeypatch):
    """Each row's marks (suppressed, remainder) and LIMIT's cut reach every output."""
    import importlib
    import io

    from rich.console import Console

    app = importlib.import_module("datafed.cli.app")  # the module; the package exports the app

    sql = "SELECT zone, COUNT(*) AS n FROM t GROUP BY zone ORDER BY n DESC NULLS FIRST LIMIT 3"
    out = MARKED.postprocess(parse_query(sql).post)
    assert out.rows == (("b", None), (None, 9), ("d", 7)) and out.cut_by_limit == 2
    data = json.loads(out.to_json())
    assert data["suppressed"] == [True, False, False]
    assert data["remainder"] == [False, True, False]
    assert data["cut_by_limit"] == 2
    df = out.to_pandas()
    assert list(df.columns) == ["zone", "n", "_suppressed", "_remainder"]
    assert df["_suppressed"].tolist() == [True, False, False]
    assert df["_remainder"].tolist() == [False, True, False]
    assert df.attrs["cut_by_limit"] == 2
    assert df.attrs["marks"] == {"suppressed": "_suppressed", "remainder": "_remainder"}
    clash = QueryResult(("_remainder", "n"), (("a", 1),), "plain", "j", ()).to_pandas()
    assert list(clash.columns) == ["_remainder", "n", "_suppressed", "__remainder"]
    assert clash.attrs["marks"]["remainder"] == "__remainder" and not clash.attrs["cut_by_limit"]
    screen = io.StringIO()
    monkeypatch.setattr(app, "out", Console(file=screen, width=200))
    app._print_table(out)
    text = screen.getvalue()
    lines = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if ln.count("│") > 3}
    assert lines["b"].rstrip(" │").endswith("suppressed")
    assert lines["NULL"].rstrip(" │").endswith("remainder")
    assert "suppressed" not in lines["d"] and "remainder" not in lines["d"]
    assert "suppressed: 1 group(s) withheld" in text and "remainder: the row marked" in text
    assert "limit: 2 more row(s) that HAVING kept were left out by LIMIT/OFFSET (5 in all)" in text
    screen.truncate(0)
    plain = QueryResult(("n",), ((3,),), "plain", "j", ())
    app._print_table(plain)  # no marks: no note column, no lines
    assert "note" not in screen.getvalue() and "limit:" not in screen.getvalue()
