"""Policy changes take effect without a restart (SIGHUP or ``datafed-node reload``), ledgered."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from tests.integration.raw import ledger_records

SQL = "SELECT COUNT(*) FROM pipe_incidents"
NODE_BIN = Path(sys.executable).parent / "datafed-node"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    lf = LocalFederation.create(
        tmp_path_factory.mktemp("reload"),
        water_district_specs(segments=10),
        analysts=("alice", "bob"),
    )
    lf.start()
    lf.write_fed_toml("bob")
    try:
        yield lf
    finally:
        lf.stop()


def reload(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NODE_BIN), "reload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(fed: LocalFederation, node: str, decision: str, after: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = ledger_records(fed, node)[after:]
        if any(r.operation == "policy_reload" and r.decision == decision for r in recs):
            return
        time.sleep(0.2)
    raise AssertionError(f"{node} recorded no {decision} policy_reload")


def test_policy_reload_allows_a_new_requester_and_is_ledgered(fed):
    bob = Federation.from_file(fed.root / "fed-bob.toml")
    with pytest.raises(RemoteError, match="requester 'bob' is not allowed"):
        bob.query(SQL, purpose=PURPOSE, protection="plain")
    sizes = {n.spec.name: len(ledger_records(fed, n.spec.name)) for n in fed.nodes}
    for node in fed.nodes:
        text = node.config.read_text().replace('["alice"]', '["alice", "bob"]', 1)
        node.config.write_text(text)
        done = reload(node.config)
        assert done.returncode == 0, done.stderr
        assert f"node {node.spec.name} adopted" in done.stdout
    for node in fed.nodes:
        wait_for(fed, node.spec.name, "approved", sizes[node.spec.name])
        (entry,) = [
            r
            for r in ledger_records(fed, node.spec.name)[sizes[node.spec.name] :]
            if r.operation == "policy_reload"
        ]
        assert (
            entry.reason == "policy reloaded: pipe_incidents" and len(entry.details["config"]) == 64
        )
    r = bob.query(SQL, purpose=PURPOSE, protection="plain")
    assert r.rows[0][0] == 3 * 10 * 36


def test_a_reload_that_changes_more_than_policy_is_refused_and_ledgered(fed):
    node = fed.nodes[0]
    before = len(ledger_records(fed, node.spec.name))
    original = node.config.read_text()
    node.config.write_text(original.replace('agency = "', 'agency = "Renamed ', 1))
    try:
        done = reload(node.config)  # the file is valid; the node refuses it, and says so
        assert done.returncode == 1 and "refused the reload" in done.stderr
        assert "restart the node" in done.stderr
        wait_for(fed, node.spec.name, "denied", before)
    finally:
        node.config.write_text(original)
    Federation.from_file(fed.fed_toml).query(
        SQL, purpose=PURPOSE, protection="plain"
    )  # still serving


def test_reload_of_an_invalid_file_or_a_stopped_node_is_a_one_line_error(fed, tmp_path):
    node = fed.nodes[1]
    bad = tmp_path / "node.toml"
    bad.write_text(node.config.read_text().replace("min_group_size = 3", "min_group_size = 0"))
    done = reload(bad)
    assert done.returncode == 2 and "min_group_size" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text(
        node.config.read_text().replace('state_dir = "state"', f'state_dir = "{tmp_path / "s"}"')
    )
    done = reload(elsewhere)
    assert done.returncode == 2 and "is not serving" in done.stderr
