"""SQL's answers over real nodes: differential cases, issue 10's wrong answers, suppression.

Three real ``datafed-node`` processes (``tests/analyst_fed.py``).  The in-memory
differential test (``tests/unit/nodes/test_sql_answers.py``) runs many more cases; this one
proves the same over the wire, plus what only real nodes show: suppression is enforced
at the node (a hostile client that ignores the flag sees zeros), DP groups are flagged
from their noisy counts, discovery, notebooks and pandas.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Iterator
from decimal import Decimal

import pytest

from datafed.client import Federation
from datafed.local.federation import PURPOSE, LocalFederation, _free_port
from datafed.proto.v1 import modes_pb2, query_pb2
from tests import analyst_fed, sql_cases
from tests.integration.raw import query_stub, signed_query

CASES = [("plain", 5), ("paillier", 2), ("shares", 1), ("secagg", 1), ("ckks", 1)]
WARDS = "SELECT zone, COUNT(*), SUM(cost) FROM wards GROUP BY zone"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    local = analyst_fed.create(tmp_path_factory.mktemp("analyst"))
    local.start()
    local.write_fed_toml("bob")
    try:
        yield local
    finally:
        codes = local.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


@pytest.fixture(scope="module")
def alice(fed: LocalFederation) -> Federation:
    return Federation.from_file(fed.fed_toml)


def _sorted(rows, width):
    return sorted(rows, key=lambda row: [(v is None, str(v)) for v in row[:width]])


def test_random_queries_over_real_nodes_equal_sqlite(alice):
    parts = analyst_fed.visits_parts()
    rng = random.Random("real-nodes")
    for name, n in CASES:
        for _ in range(n):
            case = sql_cases.query(rng, minmax=name == "plain", post=name == "plain")
            r = alice.query(case.sql, purpose=PURPOSE, protection=name)
            want = sql_cases.expected(case, parts, name != "plain")
            width = len(case.group_by)
            got = [tuple(row) for row in r.exact_rows]
            if not case.ordered:
                got, want = _sorted(got, width), _sorted(want, width)
            assert [g[:width] for g in got] == [w[:width] for w in want], case.sql
            tol = (r.error_bound or 0.0) + (1e-6 if name == "ckks" else 0.0)
            for g, w in zip(got, want, strict=True):
                for kind, a, b in zip(case.kinds, g[width:], w[width:], strict=True):
                    assert sql_cases.same(a, b, kind, tolerance=tol), (case.sql, g, w)


# -------------------------------------------------- the wrong answers of issue 10
def test_min_has_no_phantom_zero_from_an_all_null_node(alice):
    """Issue 10 (main answered 0.0: node A's NULL as 0 won the merge); SQL says 2.0."""
    sql = "SELECT MIN(cost), MAX(cost) FROM nulls WHERE zone = 'n'"
    assert alice.query(sql, purpose=PURPOSE, protection="plain").rows == ((2.0, 5.0),)


@pytest.mark.parametrize("protection", ["plain", "paillier"])
def test_a_group_null_everywhere_is_null(alice, protection):
    """Issue 10 (main answered 0.0): ward s's costs are NULL at every node."""
    r = alice.query(
        "SELECT zone, SUM(cost), AVG(cost), COUNT(cost), COUNT(*) FROM nulls "
        "WHERE zone = 's' GROUP BY zone",
        purpose=PURPOSE,
        protection=protection,
    )
    assert [row for row in r.rows if row[0] == "s"] == [("s", None, None, 0, 2)]


@pytest.mark.parametrize("protection", ["paillier", "shares", "plain"])
def test_sum_over_no_rows_is_null(alice, protection):
    """Issue 10 (main: 0.0 under the protected modes): no row has visits > 100."""
    r = alice.query(
        "SELECT SUM(cost), COUNT(*) FROM nulls WHERE visits > 100",
        purpose=PURPOSE,
        protection=protection,
    )
    assert r.rows == ((None, 0),)


# ------------------------------------------------------------------ suppression
@pytest.mark.parametrize("protection", ["plain", "paillier", "shares"])
def test_a_suppressed_group_is_flagged_never_zero_or_dropped(alice, protection):
    """Issue 10: ward n (9 + 2 rows, k = 3) printed 0 under paillier, vanished under plain.

    Issue 17: decided on the combined group -- ward n (11 rows) is released whole; ward s
    (1 + 1 rows) is flagged and NULL, never 0 nor dropped.
    """
    r = alice.query(WARDS, purpose=PURPOSE, protection=protection)
    rows = {row[0]: (row[1:], flag) for row, flag in zip(r.rows, r.suppressed, strict=True)}
    assert rows["n"][1] is False and rows["n"][0][0] == 11
    assert rows["s"] == ((None, None), True)
    assert rows["e"] == ((5, 11.25), False)
    assert ("w" in rows) == (protection != "plain")


def test_on_exact_data_a_node_withholds_nothing_of_its_own(fed):
    """k applies to the combined group, never to one node's share (issue 17).

    Per-node suppression withheld ward n's 2 rows at one node, so a group of 11 rows in
    the union came out suppressed. A hostile analyst's own client reads every node's
    share under ``plain`` by design -- exact data protects no row (docs/invisibility.md).
    """
    node = fed.nodes[1].spec.name  # holds 2 rows of ward n and 1 of ward s (k = 3)
    signed = signed_query(fed, node, WARDS, job_id="job-raw-suppress")
    ch, stub = query_stub(fed, 1)
    with ch:
        reply: query_pb2.QueryResponse = stub.Query(signed.request, timeout=30)
    assert list(reply.components) == ["count(*)", "sum(cost)", "count(cost)"]
    values = list(modes_pb2.PlainPayload.FromString(reply.payload).values)
    keys = [g.values[0].string_value for g in reply.groups]
    counts = {k: values[i * 3] for i, k in enumerate(keys)}
    assert counts == {"n": 2, "s": 1}


def test_dp_small_groups_are_flagged_from_their_noisy_counts(alice):
    """No exact-count suppression under DP; the client flags noisy counts under k = 10."""
    r = alice.query(
        "SELECT zone, COUNT(*) FROM dp_visits GROUP BY zone", purpose=PURPOSE, protection="paillier"
    )
    flags = dict(zip((row[0] for row in r.rows), r.suppressed, strict=True))
    assert flags == {"n": False, "e": True, "s": True, "w": True, None: True}
    (n_row,) = [row for row in r.rows if row[0] == "n"]
    assert abs(n_row[1] - 600) < 60 and r.noise_stddev["count(*)"] > 0
    assert all(row[1] is None for row in r.rows if row[0] != "n")


# ------------------------------------------------------- SQL people write
def test_aliases_having_order_by_and_limit_apply_to_the_result(alice):
    r = alice.query(
        "SELECT zone AS ward, COUNT(*) AS n, SUM(visits) AS total FROM visits "
        "GROUP BY zone HAVING COUNT(*) > 5 ORDER BY total DESC, ward LIMIT 2",
        purpose=PURPOSE,
        protection="plain",
    )
    want = sql_cases.sqlite_answer(
        analyst_fed.visits_parts(),
        "SELECT zone, COUNT(*), SUM(visits) AS total FROM visits GROUP BY zone "
        "HAVING COUNT(*) > 5 ORDER BY total DESC, zone LIMIT 2",
    )
    assert r.columns == ("ward", "n", "total")
    assert [tuple(row) for row in r.rows] == want


# ------------------------------------------------------------------- notebooks
async def test_query_works_inside_a_running_event_loop(alice):
    """A Jupyter cell runs in the kernel's loop: query() must not call asyncio.run there."""
    asyncio.get_running_loop()  # we are inside one
    sync = alice.query("SELECT COUNT(*) FROM nulls", purpose=PURPOSE, protection="plain")
    awaited = await alice.aquery("SELECT COUNT(*) FROM nulls", purpose=PURPOSE, protection="plain")
    assert sync.rows == awaited.rows == ((9,),)


def test_to_pandas_has_flags_bounds_and_exact_json(alice, monkeypatch):
    r = alice.query(WARDS, purpose=PURPOSE, protection="ckks")
    df = r.to_pandas()
    assert list(df.columns) == ["zone", "count(*)", "sum(cost)", "_suppressed", "_remainder"]
    flags = dict(zip(df["zone"], df["_suppressed"], strict=True))
    assert {k: v for k, v in flags.items() if isinstance(k, str)} == {
        "n": False,  # 9 + 2 rows over the nodes, k = 3: shown (issue 17: combined group)
        "e": False,
        "s": True,
        "w": False,
    }
    assert list(df["_remainder"]) == [False, False, False, False, True]
    assert str(df["count(*)"].dtype) == "Int64" and df.attrs["protection"] == "ckks"
    assert df.attrs["error_bound"] == r.error_bound is not None
    e = alice.query(
        "SELECT zone, SUM(cost), MAX(cost) FROM nulls WHERE zone = 'e' GROUP BY zone",
        purpose=PURPOSE,
        protection="plain",
    )
    text = e.to_json()
    assert '["e", 30810.37, 30810.07]' in text and "30810.0700" not in text
    parsed = json.loads(text, parse_float=Decimal)
    assert parsed["rows"] == [["e", Decimal("30810.37"), Decimal("30810.07")]]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if the extra were not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'datafed\[pandas\]'"):
        e.to_pandas()


# ------------------------------------------------------------------- discovery
def test_discover_shows_columns_and_what_this_analyst_may_do(fed, alice):
    before = {s.node: s for s in alice.discover()}
    assert all(s.up for s in before.values())
    info = before[fed.nodes[0].spec.name].info
    assert info is not None and info.caller == "analyst:alice"
    wards = info.described["wards"]
    assert wards.description == "Hospital visits per ward [synthetic]"
    cols = {c.name: (c.type, c.description) for c in wards.columns}
    assert cols["cost"] == ("real", "treatment cost in EUR [incl. VAT]")
    assert cols["year"] == ("integer", "")
    assert wards.access.allowed and wards.access.purposes == (PURPOSE,)
    assert (wards.access.min_group_size, wards.access.min_participants) == (3, 3)
    assert "ckks" in wards.access.protections and not wards.access.dp
    dp = info.described["dp_visits"].access
    assert dp.dp and dp.epsilon_per_query == 10.0 and dp.budget_scope == "requester"
    alice.query("SELECT COUNT(*) FROM dp_visits", purpose=PURPOSE, protection="paillier")
    after = {s.node: s for s in alice.discover()}
    left = after[fed.nodes[0].spec.name].info.described["dp_visits"].access.budget_left
    assert left == pytest.approx(dp.budget_left - 10.0)


def test_discover_tells_a_refused_analyst_nothing_of_the_policy(fed):
    bob = Federation.from_file(fed.root / "fed-bob.toml")
    info = bob.discover()[0].info
    assert info is not None and info.caller == "analyst:bob"
    wards = info.described["wards"].access
    assert not wards.allowed and wards.purposes == () and wards.budget_left == 0.0
    assert info.described["visits"].access.allowed


def test_discover_marks_a_down_node_and_shows_the_others(fed, tmp_path):
    text = fed.fed_toml.read_text()
    text += f'\n[[nodes]]\nname = "water-west"\naddress = "127.0.0.1:{_free_port()}"\n'
    path = tmp_path / "fed.toml"
    path.write_text(text)
    statuses = Federation.from_file(path).discover()
    down = [s for s in statuses if not s.up]
    assert [s.node for s in down] == ["water-west"] and "cannot reach" in down[0].error
    assert sum(s.up for s in statuses) == 3
