"""Upgrading: this release serves a node folder written by the previous one.

``tests/fixtures/state_v0`` was made by commit 04b920a (the release before issue 22's
work) with ``tests/fixtures/make_state_v0.py``: two DP nodes, a ledger holding two queries
of epsilon 0.5 each of a budget of 1.5 and one refusal.  The current code checks the
config, backs the state up, serves it: the old entries are unchanged and the ledger
continues append-only under the same key, and the budget spent before the upgrade still
counts -- one more query fits, the next is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit import Ledger, ledger_origin
from datafed.client import Federation
from datafed.errors import RemoteError
from datafed.local.federation import PURPOSE, LocalFederation, LocalNode, NodeSpec
from datafed.pki.ca import load_signing_key
from tests.integration.raw import ledger_records

FIXTURE = Path(__file__).parents[1] / "fixtures" / "state_v0"
BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts) FROM pipe_incidents"


def old_records(root: Path, name: str) -> list:
    key = load_signing_key(root / "pki" / "node" / f"{name}.ed25519")
    path = root / "nodes" / name / "state" / "ledger.sqlite"
    with Ledger.open(path, ledger_origin(name), key) as led:
        return [led.get_record(i) for i in range(led.head().size)]


def test_the_previous_release_state_is_served_and_continues(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    shutil.copytree(FIXTURE, root)
    for key in (root / "pki").rglob("*.key"):
        key.chmod(0o600)  # git keeps no modes
    for key in (root / "pki").rglob("*.ed25519"):
        key.chmod(0o600)
    names = ("water-north", "water-east")
    before = {n: old_records(root, n) for n in names}
    assert [r.epsilon for r in before["water-north"] if r.decision == "approved"] == [0.5, 0.5]
    nodes = [
        LocalNode(NodeSpec(n, n, []), root / "nodes" / n / "node.toml", root / f"{n}.log")
        for n in names
    ]
    fed = LocalFederation(root=root, nodes=nodes)
    for node in nodes:
        done = subprocess.run(
            [str(BIN / "datafed-node"), "check-config", "-c", str(node.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [str(BIN / "datafed-node"), "backup", "-c", str(node.config), "-o",
             str(tmp_path / f"{node.spec.name}.tar.gz")],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and "pipe_incidents 1" in done.stdout, done.stderr
    fed.start()
    try:
        alice = Federation.from_file(fed.write_fed_toml())
        assert alice.query(SQL, purpose=PURPOSE).epsilon == {n: 0.5 for n in names}
        with pytest.raises(RemoteError, match="budget"):
            alice.query(SQL, purpose=PURPOSE)  # 1.5 spent: the old spends still count
        for n in names:
            after = ledger_records(fed, n)
            assert after[: len(before[n])] == before[n] and len(after) > len(before[n])
    finally:
        codes = fed.stop()
    assert codes == [0, 0]
