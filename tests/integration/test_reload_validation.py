"""One validation: ``reload`` runs what ``check-config`` runs, and says what the node decided.

Three real DP nodes.  A reload naming a column the dataset does not have is refused by the
node -- exit status 1, the reason printed, ``denied`` in its ledger, the old policy still
in force; ``check-config`` and ``reload`` refuse DP bounds that do not fit the column's
type or a sane magnitude (``[0.5, 1.5e30]`` on an integer column); and a query whose DP
noise the node's 64-bit values cannot hold is refused before admission: a ``denied``
entry, no epsilon spent, the budget untouched.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from tests.integration.raw import ledger_records

NODE_BIN = Path(sys.executable).parent / "datafed-node"
DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 5.0
bounds = { bursts = [0, 3], repair_hours = [0, 1000000000] }
"""
SQL = "SELECT SUM(bursts) FROM pipe_incidents"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=10)
    for s in specs:
        s.policy_toml = s.policy_toml.replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    lf = LocalFederation.create(tmp_path_factory.mktemp("validate"), specs)
    lf.start()
    try:
        yield lf
    finally:
        lf.stop()


def node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NODE_BIN), *args], capture_output=True, text=True, timeout=120, check=False
    )


def spent(fed: LocalFederation, node: str) -> float:
    return sum(r.epsilon for r in ledger_records(fed, node))


def test_reload_refuses_what_check_config_refuses_and_says_so(fed: LocalFederation) -> None:
    node = fed.nodes[0]
    name = node.spec.name
    original = node.config.read_text()
    before = len(ledger_records(fed, name))
    node.config.write_text(
        original.replace(
            "[datasets.policy]\n", '[datasets.policy]\nallowed_columns = ["bursts", "nope"]\n', 1
        )
    )
    try:
        checked = node_cli("check-config", "-c", str(node.config))
        assert checked.returncode == 1
        assert "allowed_columns names 'nope', which the dataset does not have" in checked.stderr
        done = node_cli("reload", "-c", str(node.config))
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"node {name} refused the reload and keeps its policy" in done.stderr
        assert "allowed_columns names 'nope'" in done.stderr
    finally:
        node.config.write_text(original)
    (entry,) = ledger_records(fed, name)[before:]
    assert (entry.operation, entry.decision) == ("policy_reload", "denied")
    assert "allowed_columns names 'nope'" in entry.reason
    # The old policy is still in force: other columns may still be read.
    alice = Federation.from_file(fed.fed_toml)
    assert alice.query(
        "SELECT SUM(repair_hours) FROM pipe_incidents", purpose=PURPOSE, protection="plain"
    ).rows
    done = node_cli("reload", "-c", str(node.config))
    assert done.returncode == 0 and f"node {name} adopted" in done.stdout, done.stderr


def test_dp_bounds_must_fit_the_column_type_and_a_sane_magnitude(fed: LocalFederation) -> None:
    node = fed.nodes[1]
    original = node.config.read_text()
    before = len(ledger_records(fed, node.spec.name))
    cases = {
        "bursts = [0.5, 1.5e30]": "column 'bursts' is integer; give whole-number bounds",
        "bursts = [0, 1.5e30]": "makes every answer noise",
        "bursts = [0, 2000000000000]": "makes every answer noise",
    }
    try:
        for bounds, fragment in cases.items():
            node.config.write_text(original.replace("bursts = [0, 3]", bounds))
            checked = node_cli("check-config", "-c", str(node.config))
            assert checked.returncode == 1 and fragment in checked.stderr, checked.stderr
            done = node_cli("reload", "-c", str(node.config))
            assert done.returncode == 1 and fragment in done.stderr, done.stderr
    finally:
        node.config.write_text(original)
    denied = ledger_records(fed, node.spec.name)[before:]
    assert [r.decision for r in denied] == ["denied"] * 3
    assert all(r.operation == "policy_reload" and r.epsilon == 0 for r in denied)


def test_a_query_that_would_overflow_is_refused_before_admission(fed: LocalFederation) -> None:
    alice = Federation.from_file(fed.fed_toml)
    before = {n.spec.name: spent(fed, n.spec.name) for n in fed.nodes}
    sizes = {n.spec.name: len(ledger_records(fed, n.spec.name)) for n in fed.nodes}
    # VAR squares the values: (1e9)^2 in 16 fixed-point bits cannot carry its noise.
    with pytest.raises(RemoteError, match="refused before admission: no epsilon spent"):
        alice.query("SELECT VAR(repair_hours) FROM pipe_incidents", purpose=PURPOSE)
    for n in fed.nodes:
        new = ledger_records(fed, n.spec.name)[sizes[n.spec.name] :]
        assert new and all(r.decision == "denied" and r.epsilon == 0 for r in new), new
        assert spent(fed, n.spec.name) == before[n.spec.name]
    # The same dataset still answers what fits, and that spends.
    r = alice.query(SQL, purpose=PURPOSE)
    assert r.epsilon == {n.spec.name: 0.5 for n in fed.nodes}
    for n in fed.nodes:
        assert spent(fed, n.spec.name) == before[n.spec.name] + 0.5
