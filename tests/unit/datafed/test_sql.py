import pytest
from hypothesis import given
from hypothesis import strategies as st

from datafed.errors import QueryError
from datafed.query.spec import AllOf, AnyOf, Between, Comparison, InList, Not
from datafed.query.sql import parse_sql


def test_basic_aggregates():
    spec = parse_sql("SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024")
    assert spec.dataset == "pipe_incidents"
    assert [(a.func, a.column) for a in spec.aggregates] == [("sum", "bursts"), ("count", "*")]
    assert spec.where == Comparison(column="year", op="=", value=2024)


def test_group_by_and_every_condition_form():
    spec = parse_sql(
        "SELECT district, AVG(x), VAR(x), VARIANCE(y), MIN(z), MAX(z) FROM t "
        "WHERE a IN (1, 2) AND NOT b BETWEEN 1 AND 3 OR c != 'k' AND d NOT IN ('u') "
        "AND -1.5 < e GROUP BY district"
    )
    assert spec.group_by == ("district",)
    assert [a.func for a in spec.aggregates] == ["avg", "var", "var", "min", "max"]
    assert isinstance(spec.where, AnyOf)
    left, right = spec.where.items
    assert isinstance(left, AllOf)
    assert left.items[0] == InList(column="a", values=(1, 2))
    assert left.items[1] == Not(item=Between(column="b", low=1, high=3))
    flat = repr(right)
    assert "negated=True" in flat
    # a literal on the left is flipped so the column is always on the left
    assert "Comparison(kind='cmp', column='e', op='>', value=-1.5)" in flat


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("", "empty"),
        ("SELECT SUM(a) FROM t; DROP TABLE t", "exactly one statement"),
        ("DELETE FROM t", "only SELECT"),
        ("SELECT SUM(a) FROM t JOIN u ON t.k = u.k", "JOIN (use intersection-sum"),
        ("SELECT SUM(a) FROM t ORDER BY a", "ORDER BY may name GROUP BY columns"),
        ("SELECT SUM(a) FROM t LIMIT -1", "LIMIT takes a non-negative integer"),
        ("SELECT SUM(a) FROM t GROUP BY b HAVING a > 1", "'a' is none of them"),
        ("SELECT SUM(a) AS a FROM t HAVING a > 1", "a column of the dataset"),
        ("SELECT b, SUM(a) AS B FROM t GROUP BY b", "GROUP BY b names a SELECT alias"),
        ("SELECT COUNT(*) FROM t HAVING COUNT(*) > '5'", "write it as a number"),
        ("SELECT COUNT(*) FROM t HAVING COUNT(*) = TRUE", "write a number"),
        ("SELECT b, COUNT(*) FROM t GROUP BY b HAVING b < TRUE", "boolean can only be"),
        ("SELECT b, COUNT(*) FROM t GROUP BY b HAVING t.b = 1", "plain name"),
        ("SELECT a FROM t", "must be aggregated"),
        ("SELECT * FROM t", "unsupported expression"),
        ("SELECT SUM(a) FROM (SELECT * FROM t)", "exactly one dataset"),
        ("SELECT SUM(a) FROM s.t", "exactly one dataset"),
        ("SELECT SUM(a) FROM t WHERE a = (SELECT 1)", "literal"),
        ("SELECT SUM(a) FROM t WHERE a IN (SELECT a FROM u)", "subqueries"),
        ("SELECT SUM(a + b) FROM t", "plain column"),
        ("SELECT LOWER(a) FROM t", "unsupported expression"),
        ("SELECT SUM(*) FROM t", "SUM(*)"),
        ("SELECT COUNT(DISTINCT a) FROM t", "DISTINCT"),
        ("SELECT SUM(a) FROM t WHERE LOWER(b) = 'x'", "column on one side"),
        ("SELECT SUM(a) FROM t WHERE a = b", "literal"),
        ("SELECT SUM(a) FROM t WHERE a LIKE 'x%'", "unsupported condition"),
        ("SELECT SUM(t.a) FROM t", "plain column"),
        ("SELECT SUM(a FROM t", "cannot parse"),
        ("SELECT SUM(a) FROM", "cannot parse"),
        ("SELECT SUM(a) FROM t" + " " * 10_001, "longer than"),
    ],
)
def test_refused(sql, fragment):
    with pytest.raises(QueryError, match=None) as info:
        parse_sql(sql)
    assert fragment.lower() in str(info.value).lower()


def test_injection_in_string_literal_stays_a_literal():
    spec = parse_sql("SELECT SUM(a) FROM t WHERE name = 'x''; DROP TABLE t; --'")
    assert spec.where == Comparison(column="name", op="=", value="x'; DROP TABLE t; --")


def test_quoted_identifier_injection_refused():
    with pytest.raises(QueryError, match="identifier"):
        parse_sql('SELECT SUM("a; DROP TABLE t") FROM t')


@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text):
    try:
        parse_sql(text)
    except QueryError:
        pass


def test_histogram_parses_and_validates():
    spec = parse_sql(
        "SELECT material, HISTOGRAM(repair_hours, 0, 2, 4.5, 24) FROM t GROUP BY material"
    )
    (agg,) = spec.aggregates
    assert (agg.func, agg.column, agg.bins) == ("histogram", "repair_hours", (0.0, 2.0, 4.5, 24.0))
    assert agg.labels == (
        "histogram(repair_hours)[0,2)",
        "histogram(repair_hours)[2,4.5)",
        "histogram(repair_hours)[4.5,24]",
    )
    for bad, msg in [
        ("SELECT HISTOGRAM(x, 1) FROM t", "needs a column"),
        ("SELECT HISTOGRAM(x, 3, 1) FROM t", "increasing"),
        ("SELECT HISTOGRAM(x, 'a', 'b') FROM t", "numbers"),
        ("SELECT HISTOGRAM(1, 2, 3) FROM t", "plain column"),
    ]:
        with pytest.raises(QueryError, match=msg):
            parse_sql(bad)


def _histograms(n: int) -> str:
    edges = ", ".join(str(e) for e in range(65))  # 64 bins each
    return ", ".join(f"HISTOGRAM(c{i}, {edges})" for i in range(n))


def test_the_front_end_refuses_what_a_node_would_count_as_too_wide():
    # 8 x 64 bins = 512 values: accepted
    assert len(parse_sql(f"SELECT {_histograms(8)} FROM t").aggregates) == 8
    # 8 x 64 bins and a row count = 513 values: over the node's default 512
    with pytest.raises(QueryError, match=r"513 values per group.*at most 512"):
        parse_sql(f"SELECT {_histograms(8)}, COUNT(*) FROM t")


def test_the_front_end_bounds_the_number_of_aggregates():
    many = ", ".join(f"SUM(c{i})" for i in range(33))
    with pytest.raises(QueryError, match="at most 32 aggregates, got 33"):
        parse_sql(f"SELECT {many} FROM t")
