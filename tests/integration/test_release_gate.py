"""Issue 17 against real nodes: the release gate, the consortium rule, no silent change.

Four district nodes serve ``pipe_incidents`` (exact, about things, consortium = all four)
and ``residents`` (person-level, DP). Each test plays one attack class of issue 17 with
the client the library ships or with hand-signed requests (``tests/integration/raw.py``),
as a curious analyst with a valid certificate would; each failed on the code before the
gate (``docs/invisibility.md``, attack table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import LocalFederation
from datafed.proto.v1 import query_pb2
from datafed.wire.serde import literal_to_proto
from tests.integration.raw import (
    PURPOSE,
    district_specs,
    failing_after_admission,
    ledger_records,
    query_stub,
    signed_query,
)

DISTRICTS = ("north", "east", "south", "west")
NODES = tuple(f"water-{d}" for d in DISTRICTS)
MODES = ["paillier", "shares", "secagg", "ckks", "plain"]
EXACT = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
    'allowed_aggregates = ["sum", "count", "avg"]\n'
    "min_group_size = 3\n"
    "min_participants = 3\n"
    "person_level = false\n"
    "[datasets.policy.group_domains]\n"
    'material = ["cast_iron", "ductile_iron", "steel"]\n'  # "pvc" is left undeclared
)
DP = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_protections = ["paillier", "plain", "shares", "secagg", "ckks"]\n'
    'allowed_aggregates = ["sum", "count", "avg"]\n'
    "min_group_size = 5\n"
    "[datasets.policy.group_domains]\n"
    'district = ["north", "east", "south", "west"]\n'
    "[datasets.policy.dp]\n"
    "epsilon_per_query = 1.0\n"
    "budget_epsilon = 50.0\n"
    "bounds = { income = [0, 400000], age = [0, 120] }\n"
)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = district_specs(DISTRICTS, EXACT, DP, seed=5, segments=40, residents=60)
    fed = LocalFederation.create(tmp_path_factory.mktemp("gate"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def alice(city: LocalFederation) -> Federation:
    return Federation.from_file(city.fed_toml)


def sqlite_union(city: LocalFederation, sql: str) -> list[tuple[Any, ...]]:
    """SQLite's answer over the union of the four nodes' rows, read from their files."""
    db = sqlite3.connect(":memory:")
    for i, node in enumerate(city.nodes):
        path = node.config.parent / "data" / "pipe_incidents.sqlite"
        db.execute(f"ATTACH DATABASE '{path}' AS n{i}")
    union = " UNION ALL ".join(f"SELECT * FROM n{i}.pipe_incidents" for i in range(len(NODES)))
    return [tuple(r) for r in db.execute(sql.replace("FROM pipe_incidents", f"FROM ({union})"))]


def approved(city: LocalFederation, node: str, job_id: str) -> list[str]:
    return [r.decision for r in ledger_records(city, node) if r.job_id == job_id]


def _domain(keys: list[tuple[Any, ...]]) -> list[query_pb2.GroupKey]:
    out = []
    for key in keys:
        g = query_pb2.GroupKey()
        g.values.extend(literal_to_proto(v) for v in key)
        out.append(g)
    return out


# -------------------------------------------------------- class 1: the analyst's domain
def test_a_domain_of_copies_of_one_key_is_refused_before_admission(city):
    """10,000 copies of one key drew 10,000 fresh noises for one epsilon: averaged, exact.

    The node reports its own declared domain and nothing else: a request whose domain is
    not exactly that is refused before admission -- nothing charged, nothing read.
    """
    sql = "SELECT district, SUM(income), COUNT(*) FROM residents GROUP BY district"
    copies = query_pb2.Protection(mode="plain", fixed_point_bits=16)
    copies.domain.extend(_domain([("north",)] * 10_000))
    probe = signed_query(city, "water-north", sql, job_id="job-copies", protection=copies)
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(probe.request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not this node's declared one" in (err.value.details() or "")
    assert approved(city, "water-north", "job-copies") == ["denied"]  # nothing admitted
    # The honest query: each declared district once, then the remainder, each noised once.
    r = alice(city).query(sql, purpose=PURPOSE, protection="plain")
    assert [row[0] for row in r.rows] == ["east", "north", "south", "west", None]
    assert r.remainder == (False, False, False, False, True)
    assert r.noise_stddev and set(r.epsilon.values()) == {1.0}


# --------------------------------------------- class 3: a node's value by differences
def test_exact_totals_are_only_over_the_whole_consortium(city):
    """{a,b,c,d} minus {a,b,c} gave agency d's exact groups, in every mode."""
    full = alice(city).query(
        "SELECT material, SUM(bursts) FROM pipe_incidents GROUP BY material",
        purpose=PURPOSE,
        protection="paillier",
    )
    assert set(full.nodes) == set(NODES)
    fed = alice(city)
    three = Federation(fed.config.model_copy(update={"nodes": fed.config.nodes[:3]}))
    for mode in MODES:
        with pytest.raises(RemoteError) as info:
            three.query("SELECT SUM(bursts) FROM pipe_incidents", purpose=PURPOSE, protection=mode)
        assert info.value.code == "PERMISSION_DENIED", mode
        assert "exactly its consortium" in info.value.message, mode


def test_a_consortium_node_dropping_out_of_secagg_releases_nothing(city, monkeypatch):
    """The analyst pretending agency d dropped after round 1 released a+b+c anyway."""
    from datafed.client._session import ProtocolSession
    from datafed.errors import NodeUnavailable

    step = ProtocolSession.step

    async def drop_west(self: ProtocolSession, node: str, round_: int, payload: bytes) -> bytes:
        if node == "water-west" and round_ >= 2:
            raise NodeUnavailable(node, "UNAVAILABLE", "dropped out (played by the test)")
        return await step(self, node, round_, payload)

    monkeypatch.setattr(ProtocolSession, "step", drop_west)
    with pytest.raises(RemoteError) as info:
        alice(city).query(
            "SELECT SUM(bursts) FROM pipe_incidents", purpose=PURPOSE, protection="secagg"
        )
    assert "did not survive" in info.value.message


# ------------------------------------- class 4: no data-dependent refusal after admission
def test_a_bound_below_a_nodes_sum_saturates_and_says_nothing(city):
    """Under ckks a node whose SUM exceeded the analyst's value_bound refused by name.

    Now the value saturates inside the protection: the same answer shape whatever the
    data, and any failure after admission reads one fixed text.
    """
    fed = alice(city)
    fed.config.modes["ckks"] = {"value_bound": 10.0}
    r = fed.query(
        "SELECT SUM(repair_hours) FROM pipe_incidents", purpose=PURPOSE, protection="ckks"
    )
    (total,) = r.rows[0]
    assert total is not None and total <= 4 * 10.0 + 1  # each node carried at most the bound
    # A fault of the request alone (Paillier parameters naming no participant) is refused
    # before admission: nothing admitted, nothing charged (red team finding 1).
    from datafed.proto.v1 import modes_pb2

    n = (1 << 2047) | 1
    params = modes_pb2.PaillierParams(n=n.to_bytes(256, "big"), value_bits=64)
    bad = query_pb2.Protection(
        mode="paillier", fixed_point_bits=16, params=params.SerializeToString()
    )
    fault = signed_query(city, "water-north", "SELECT SUM(bursts) FROM pipe_incidents",
                         job_id="job-fault", protection=bad)  # fmt: skip
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(fault.request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "participants" in (err.value.details() or "")
    assert approved(city, "water-north", "job-fault") == ["denied"]
    # A failure after admission reads one fixed text.
    probe = signed_query(city, "water-north", "SELECT SUM(bursts) FROM pipe_incidents",
                         job_id="job-after", protection=failing_after_admission(city))  # fmt: skip
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(probe.request, timeout=60)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "failed at this node after it was admitted" in (err.value.details() or "")
    assert approved(city, "water-north", "job-after") == ["approved", "denied"]


# --------------------------------------- class 5: exact data, stated honestly
def test_a_candidate_id_sweep_through_groups_is_refused_before_admission(city):
    """The per-group suppression indicator checked 1,000 candidate ids for existence."""
    ids = [(f"north-seg-{i:04d}",) for i in range(1000)]
    pmsg = query_pb2.Protection(mode="shares", fixed_point_bits=16)
    pmsg.domain.extend(_domain(ids))
    sweep = signed_query(
        city,
        "water-north",
        "SELECT segment_id, COUNT(*) FROM pipe_incidents GROUP BY segment_id",
        job_id="job-sweep",
        protection=pmsg,
    )
    ch, stub = query_stub(city, 0)
    with ch, pytest.raises(grpc.RpcError) as err:
        stub.Query(sweep.request, timeout=60)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "group_domains" in (err.value.details() or "")
    assert approved(city, "water-north", "job-sweep") == ["denied"]


def test_second_columns_and_narrowed_filters_get_sqls_answer(city):
    """Identical row sets, a second column, a narrowed filter: each answer is SQL's.

    The differencing defence substituted an earlier release's values without a mark
    (27,503 where SQL said 27,502) and forgot a second column; it is gone, and exact data
    claims no row protection (docs/invisibility.md).
    """
    fed = alice(city)
    where = "WHERE year = 2023"
    for sql in (
        f"SELECT COUNT(*), SUM(bursts) FROM pipe_incidents {where}",
        f"SELECT COUNT(*), SUM(repair_hours) FROM pipe_incidents {where}",
        f"SELECT COUNT(*), SUM(bursts) FROM pipe_incidents {where} AND month > 1",
    ):
        got = fed.query(sql, purpose=PURPOSE, protection="paillier").rows
        (want,) = sqlite_union(city, sql)
        assert got[0][0] == want[0]
        assert got[0][1] == pytest.approx(want[1], abs=1e-3)


# ----------------------------------------------- class 6: answers that silently change
def test_appended_rows_change_every_statistic_of_the_row(city):
    """After an operator appended 3 rows, COUNT and SUM(cost) stayed while SUM(bursts) moved."""
    fed = alice(city)
    sql = "SELECT COUNT(*), SUM(bursts), SUM(repair_hours) FROM pipe_incidents WHERE year = 2024"
    before = fed.query(sql, purpose=PURPOSE, protection="paillier").rows[0]
    path: Path = city.nodes[2].config.parent / "data" / "pipe_incidents.sqlite"
    with sqlite3.connect(path) as db:
        row = list(db.execute("SELECT * FROM pipe_incidents WHERE year = 2024 LIMIT 1").fetchone())
        for i in range(3):
            row[0] = f"appended-{i}"
            db.execute(f"INSERT INTO pipe_incidents VALUES ({', '.join('?' * len(row))})", row)
    after = fed.query(sql, purpose=PURPOSE, protection="paillier").rows[0]
    (want,) = sqlite_union(city, sql)
    assert after[0] == before[0] + 3 == want[0]
    assert after[1] == want[1] and after[2] == pytest.approx(want[2], abs=1e-3)


def test_null_and_undeclared_groups_land_in_a_marked_remainder(city):
    """NULL and undeclared keys of a protected GROUP BY vanished without a note."""
    r = alice(city).query(
        "SELECT material, COUNT(*) FROM pipe_incidents GROUP BY material",
        purpose=PURPOSE,
        protection="shares",
    )
    rows = dict(zip((row[0] for row in r.rows), r.rows, strict=True))
    assert set(rows) == {"cast_iron", "ductile_iron", "steel", None}
    assert r.remainder == tuple(row[0] is None for row in r.rows)
    (total,) = sqlite_union(city, "SELECT COUNT(*) FROM pipe_incidents")[0]
    assert sum(row[1] for row in r.rows) == total  # no row vanished: pvc is in the remainder
    (pvc,) = sqlite_union(
        city,
        "SELECT COUNT(*) FROM pipe_incidents WHERE material IS NULL OR material NOT IN "
        "('cast_iron', 'ductile_iron', 'steel')",
    )[0]
    assert rows[None][1] == pvc > 0
