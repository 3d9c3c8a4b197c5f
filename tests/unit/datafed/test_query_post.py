"""The client's side of SQL: post-processing clauses, exact decimals, JSON, event loops."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from decimal import Decimal

import pytest

from datafed.client.federation import run_sync
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
