"""Intersection-sum under differential privacy between real nodes: noise, budget, restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import FINANCE_PURPOSE, LocalFederation, finance_specs

IDS = ("tax-bureau", "taxpayers", "person_id")
VALUES = ("city-bank", "loans", "person_id", "amount")
BOUND = 1_000_000.0  # below the largest loans, so clamping shows
DP = {
    "tax-bureau": "epsilon_per_query = 0.5\nbudget_epsilon = 1.0\n",
    "city-bank": f"epsilon_per_query = 1.0\nbudget_epsilon = 2.0\nbounds = {{ amount = [0, {BOUND}] }}\n",
}


@pytest.fixture(scope="module")
def dpfin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """The tax bureau and the city bank, each dataset under a DP policy."""
    specs = finance_specs(taxpayers=300, loans=150, exact=True)
    for s in specs:
        s.policy_toml = s.policy_toml.replace("person_level = false\n", "")
        s.policy_toml += "[datasets.policy.dp]\n" + DP[s.name]
    fed = LocalFederation.create(tmp_path_factory.mktemp("dpfin"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


def _exact(fed: LocalFederation) -> tuple[int, float]:
    """The cleartext join, each identifier's summed amount clamped to the bound."""

    def rows(node: str, sql: str) -> list[tuple]:
        table = "taxpayers" if node == "tax-bureau" else "loans"
        with sqlite3.connect(fed.root / "nodes" / node / "data" / f"{table}.sqlite") as db:
            return db.execute(sql).fetchall()

    tax = {r[0] for r in rows("tax-bureau", "SELECT person_id FROM taxpayers")}
    sums: dict[str, float] = {}
    for pid, amount in rows("city-bank", "SELECT person_id, amount FROM loans"):
        sums[pid] = sums.get(pid, 0.0) + amount
    joined = [min(max(v, 0.0), BOUND) for pid, v in sums.items() if pid in tax]
    assert any(v == BOUND for v in joined), "the test data must exercise the clamp"
    return len(joined), sum(joined)


def _sizes(fed: LocalFederation) -> dict[str, int]:
    return {i.node: i.ledger.size for i in Federation.from_file(fed.fed_toml).node_info()}


def test_noise_charges_refusal_and_restart(dpfin: LocalFederation) -> None:
    fed = Federation.from_file(dpfin.fed_toml)
    want_size, want_sum = _exact(dpfin)
    sums = []
    for _ in range(2):  # 2 x 0.5 = the tax bureau's whole budget
        r = fed.intersection_sum(IDS, VALUES, purpose=FINANCE_PURPOSE)
        assert r.epsilon == {"tax-bureau": 0.5, "city-bank": 1.0}
        # noise at the smaller epsilon 0.5, split in two: scale BOUND/0.25 and 1/0.25
        assert r.noise_stddev == pytest.approx(2**0.5 * BOUND / 0.25)
        assert r.size_noise_stddev == pytest.approx(2**0.5 * 4)
        assert abs(r.sum - want_sum) < 10 * r.noise_stddev
        assert abs(r.intersection_size - want_size) < 10 * r.size_noise_stddev
        # each DP node spent its epsilon at admission (approved), before reading its data
        charged = [rec for x in r.receipts for rec in x.records if rec.epsilon > 0]
        assert sorted((rec.node, rec.decision, rec.epsilon) for rec in charged) == [
            ("city-bank", "approved", 1.0),
            ("tax-bureau", "approved", 0.5),
        ]
        sums.append(r.sum_fixed)
    assert sums[0] != sums[1]  # fresh noise each time (equal with negligible probability)
    before = _sizes(dpfin)
    with pytest.raises(RemoteError) as info:
        fed.intersection_sum(IDS, VALUES, purpose=FINANCE_PURPOSE)
    assert info.value.code == "RESOURCE_EXHAUSTED" and "left 0" in info.value.message
    # recorded denied at the ids node, the values node never asked, nothing released
    assert _sizes(dpfin) == {
        "tax-bureau": before["tax-bureau"] + 1,
        "city-bank": before["city-bank"],
    }
    # a restart replays the spending from the ledger: still exhausted
    node = next(n for n in dpfin.nodes if n.spec.name == "tax-bureau")
    dpfin.stop_node(node)
    dpfin.start_node(node)
    dpfin.write_fed_toml()
    with pytest.raises(RemoteError, match="exhausted") as again:
        Federation.from_file(dpfin.fed_toml).intersection_sum(IDS, VALUES, purpose=FINANCE_PURPOSE)
    assert again.value.code == "RESOURCE_EXHAUSTED"
