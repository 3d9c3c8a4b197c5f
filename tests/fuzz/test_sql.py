"""Fuzzing the SQL front end: any text gives a QuerySpec or a QueryError, never a crash.

Three sources of text: arbitrary strings; queries built from the accepted grammar with
hostile parts (deep nesting, long IN lists, many aggregates, odd literals); and valid
queries with random edits. A spec that parses must survive the wire: encoding and
decoding it gives the same spec.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datafed.errors import QueryError
from datafed.query.spec import QuerySpec
from datafed.query.sql import parse_sql
from datafed.wire.serde import spec_from_proto, spec_to_proto
from tests.fuzz.settings import fuzz

COLUMNS = ("year", "bursts", "material", "repair_hours", '"year"', "t.year", "1", "*")
FUNCS = ("SUM", "COUNT", "AVG", "VAR", "VARIANCE", "MIN", "MAX", "HISTOGRAM", "LOWER", "")
LITERALS = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.floats().map(repr),
    st.sampled_from(("'a'", "''", "'it''s'", "NULL", "TRUE", "-0", "1e999", "0x10", "?", ":a")),
    st.text(max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'"),
)


def _check(sql: str) -> None:
    try:
        spec = parse_sql(sql)
    except QueryError:
        return
    assert isinstance(spec, QuerySpec)
    assert spec_from_proto(spec_to_proto(spec)) == spec


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    col = draw(st.sampled_from(COLUMNS))
    kind = draw(st.integers(0, 9 if depth < 30 else 4))
    if kind == 0:
        return f"{col} {draw(st.sampled_from(('=', '!=', '<>', '<', '>=', 'LIKE', 'IS')))} {draw(LITERALS)}"
    if kind == 1:
        values = draw(st.lists(LITERALS, min_size=0, max_size=draw(st.sampled_from((3, 1200)))))
        return f"{col} {draw(st.sampled_from(('IN', 'NOT IN')))} ({', '.join(values)})"
    if kind == 2:
        return f"{col} BETWEEN {draw(LITERALS)} AND {draw(LITERALS)}"
    if kind == 3:
        return f"{draw(LITERALS)} < {col}"
    if kind == 4:
        return f"{col} IN (SELECT 1)"
    if kind in (5, 6):
        op = draw(st.sampled_from(("AND", "OR")))
        return f"{draw(conditions(depth + 1))} {op} {draw(conditions(depth + 1))}"
    if kind == 7:
        return f"NOT {draw(conditions(depth + 1))}"
    return f"({draw(conditions(depth + 1))})"


@st.composite
def aggregates(draw: st.DrawFn) -> str:
    func = draw(st.sampled_from(FUNCS))
    if func == "HISTOGRAM":
        edges = draw(st.lists(LITERALS, max_size=draw(st.sampled_from((3, 70)))))
        return f"HISTOGRAM({draw(st.sampled_from(COLUMNS))}{''.join(', ' + e for e in edges)})"
    distinct = draw(st.sampled_from(("", "DISTINCT ")))
    return f"{func}({distinct}{draw(st.sampled_from(COLUMNS))})"


@st.composite
def queries(draw: st.DrawFn) -> str:
    n = draw(st.sampled_from((1, 2, 5, 40)))
    items = draw(st.lists(aggregates(), min_size=0, max_size=n))
    groups = draw(st.lists(st.sampled_from(COLUMNS), max_size=5))
    sql = f"SELECT {', '.join([*groups, *items])} FROM {draw(st.sampled_from(('pipe_incidents', 'a.b', '(SELECT 1)', 't JOIN u')))}"
    if draw(st.booleans()):
        sql += f" WHERE {draw(conditions())}"
    if groups and draw(st.booleans()):
        sql += f" GROUP BY {', '.join(groups)}"
    return sql + draw(st.sampled_from(("", ";", "; SELECT 1", " LIMIT 1", " HAVING 1")))


VALID = (
    "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024",
    "SELECT material, AVG(repair_hours), VAR(bursts) FROM pipe_incidents GROUP BY material",
    "SELECT HISTOGRAM(bursts, 0, 1, 5, 10) FROM pipe_incidents WHERE material IN ('pvc', 'steel')",
    "SELECT MIN(bursts) FROM pipe_incidents WHERE NOT (year BETWEEN 2020 AND 2022 OR month > 6)",
)


@fuzz(150)
@given(st.text(max_size=300))
def test_arbitrary_text(sql: str) -> None:
    _check(sql)


@fuzz(200)
@given(queries())
def test_queries_from_the_grammar(sql: str) -> None:
    _check(sql)


@fuzz(150)
@given(st.sampled_from(VALID), st.data())
def test_edited_valid_queries(sql: str, data: st.DataObject) -> None:
    chars = list(sql)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(chars)))
        op = data.draw(st.sampled_from(("delete", "insert", "repeat")))
        if op == "delete" and chars:
            del chars[i : i + data.draw(st.integers(1, 5))]
        elif op == "insert":
            chars[i:i] = data.draw(st.text(alphabet="()'\",;-*/ 0123456789aAN=<>", max_size=4))
        else:
            chars[i:i] = chars[i : i + data.draw(st.integers(1, 20))] * data.draw(
                st.integers(1, 50)
            )
    _check("".join(chars))


def test_deep_nesting_is_a_clean_error() -> None:
    """Nesting far past the recursion limit of a recursive-descent parser."""
    for depth in (50, 400, 4000):
        for shape in ("(" * depth + "year = 1" + ")" * depth, "NOT " * depth + "year = 1"):
            _check(f"SELECT COUNT(*) FROM pipe_incidents WHERE {shape}"[:10_000])


def test_integers_beyond_64_bits_are_refused() -> None:
    for sql in ("year = 22222222222222222024", "year IN (1, -9223372036854775809)"):
        with pytest.raises(QueryError, match="does not fit in 64 bits"):
            parse_sql(f"SELECT COUNT(*) FROM pipe_incidents WHERE {sql}")
    _check("SELECT COUNT(*) FROM pipe_incidents WHERE year = -9223372036854775808")


def test_booleans_have_no_order() -> None:
    for cond in ("year < TRUE", "FALSE >= year", "year BETWEEN 1 AND 2 AND bursts > FALSE"):
        with pytest.raises(QueryError, match="boolean can only be compared with = or !="):
            parse_sql(f"SELECT COUNT(*) FROM pipe_incidents WHERE {cond}")
    _check("SELECT COUNT(*) FROM pipe_incidents WHERE year = TRUE")
