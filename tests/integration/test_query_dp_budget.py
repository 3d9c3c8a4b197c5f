"""Differential privacy and the privacy budget at real nodes: noise, charges, refusal, restart."""

from __future__ import annotations

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs

DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 1.0
budget_scope = "requester"
bounds = { bursts = [0, 3], repair_hours = [0, 24] }
"""
SQL = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"


@pytest.fixture(scope="module")
def dp_fed(tmp_path_factory):
    specs = water_district_specs(segments=60)
    for s in specs:
        s.policy_toml = s.policy_toml.replace('["alice"]', '["alice", "bob"]').replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    fed = LocalFederation.create(tmp_path_factory.mktemp("dpfed"), specs, analysts=("alice", "bob"))
    fed.start()
    fed.write_fed_toml("bob")
    try:
        yield fed
    finally:
        fed.stop()


def exact(fed: LocalFederation) -> tuple[int, int]:
    import sqlite3

    s = c = 0
    for n in fed.nodes:
        with sqlite3.connect(n.config.parent / "data" / "pipe_incidents.sqlite") as db:
            a, b = db.execute(
                "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"
            ).fetchone()
        s, c = s + a, c + b
    return s, c


def test_noise_budget_refusal_and_restart(dp_fed):
    alice = Federation.from_file(dp_fed.fed_toml)
    want_sum, want_count = exact(dp_fed)
    for _ in range(2):  # 2 x 0.5 = the whole budget of 1.0 at every node
        r = alice.query(SQL, purpose=PURPOSE, protection="paillier")
        assert r.epsilon == {n.spec.name: 0.5 for n in dp_fed.nodes}
        sd_sum, sd_count = r.noise_stddev["sum(bursts)"], r.noise_stddev["count(*)"]
        # three components -- sum(bursts), its non-null count (SQL's NULL), count(*) -- so
        # eps 0.5/3 each: Laplace scale 3*6 = 18 (sum), 1*6 = 6 (count), 3 nodes
        assert sd_sum == pytest.approx((3 * 2 * 18**2) ** 0.5)
        assert sd_count == pytest.approx((3 * 2 * 6**2) ** 0.5)
        assert abs(r.rows[0][0] - want_sum) < 10 * sd_sum
        assert abs(r.rows[0][1] - want_count) < 10 * sd_count
        # admission is spending: the epsilon is on the approved entry, before any data
        # is read; the released entry spends nothing more
        by_decision = {rec.decision: rec.epsilon for x in r.receipts for rec in x.records}
        assert by_decision == {"approved": 0.5, "released": 0.0}
    sizes = {i.node: i.ledger.size for i in alice.node_info()}
    with pytest.raises(RemoteError) as info:
        alice.query(SQL, purpose=PURPOSE, protection="paillier")
    assert info.value.code == "RESOURCE_EXHAUSTED" and "left 0" in info.value.message
    # the refusal is recorded, spends nothing, releases nothing
    assert {i.node: i.ledger.size for i in alice.node_info()} == {
        k: v + 1 for k, v in sizes.items()
    }
    # another requester has a budget of its own
    bob_rows = Federation.from_file(dp_fed.root / "fed-bob.toml").query(
        SQL, purpose=PURPOSE, protection="plain"
    )
    assert bob_rows.epsilon
    # a restart replays the spending from the ledger: still exhausted
    node = dp_fed.nodes[0]
    dp_fed.stop_node(node)
    dp_fed.start_node(node)
    dp_fed.write_fed_toml()
    dp_fed.write_fed_toml("bob")
    with pytest.raises(RemoteError, match="exhausted"):
        Federation.from_file(dp_fed.fed_toml).query(SQL, purpose=PURPOSE, protection="plain")


def test_dp_refuses_min_and_unbounded_columns(dp_fed):
    bob = Federation.from_file(dp_fed.root / "fed-bob.toml")
    with pytest.raises(RemoteError, match="MAX cannot be released"):
        bob.query("SELECT MAX(bursts) FROM pipe_incidents", purpose=PURPOSE, protection="plain")
    with pytest.raises(RemoteError, match="no DP bounds"):
        bob.query(
            "SELECT SUM(pressure_drop_kpa) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
        )


def test_admissions_record_the_budget_the_node_enforces(dp_fed, tmp_path):
    """What the auditor's report compares with its own configured budget (docs/audit.md)."""
    from audit.export import ExportDir, export_store
    from audit.records import decode_leaf

    bob = Federation.from_file(dp_fed.root / "fed-bob.toml")
    r = bob.query(SQL, purpose=PURPOSE, protection="paillier")
    for n in dp_fed.nodes:
        db = n.config.parent / "state" / "ledger.sqlite"
        exp = ExportDir(export_store(db, tmp_path / n.spec.name))
        recs = [decode_leaf(leaf)[1] for leaf in exp.leaves()]
        (ok,) = [x for x in recs if x.job_id == r.job_id and x.decision == "approved"]
        assert ok.epsilon == 0.5
        assert (ok.details["budget_epsilon"], ok.details["budget_scope"]) == ("1.0", "requester")
