"""``datafed train`` against real node processes: what a node's published policy refuses is
refused before any Flower run starts (exit 3, each node and its reason), and the job must
name its own dataset and columns (no demo defaults).

The federation file names a SuperLink that is not there: a job that got past the check
would fail reaching it, so a refusal naming the nodes' reasons proves none was tried.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs, flood_policy
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.federation import LocalFederation

BIN = Path(sys.executable).parent
FEATURES = ",".join(FLOOD_FEATURES)


@pytest.fixture(scope="module")
def fed_toml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("preflight")
    specs = flood_node_specs(2, policy=flood_policy(requesters=("alice", "bob")))
    specs[1].policy_toml = flood_policy(requesters=("alice",))  # bob may not use the second
    local = LocalFederation.create(root, specs, analysts=("alice", "bob"))
    local.start()
    try:
        path = local.write_fed_toml("bob", path=root / "fed-bob.toml")
        path.write_text(path.read_text() + '\n[flower]\nsuperlink = "127.0.0.1:1"\n')
        yield path
    finally:
        codes = local.stop()
        assert all(c == 0 for c in codes), codes


def train(fed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "datafed"), "train", "-f", str(fed), "--rounds", "1", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_policy_refusals_come_before_any_flower_run_with_exit_3(fed_toml: Path) -> None:
    cols = ["--dataset", FLOOD_TABLE, "--features", FEATURES, "--label", FLOOD_LABEL]
    got = train(fed_toml, "--purpose", "marketing", *cols)
    assert got.returncode == 3, got.stderr
    (line,) = got.stderr.strip().splitlines()
    assert "training refused by 2 node(s) (their published policies, before any Flower run" in line
    assert "node 'flood-coastal': PERMISSION_DENIED: purpose 'marketing' is not allowed" in line
    assert "SuperLink" not in got.stderr and "Traceback" not in got.stderr

    got = train(fed_toml, "--purpose", FLOOD_PURPOSE, *cols)  # bob: allowed at one node only
    assert got.returncode == 3, got.stderr
    assert "training refused by 1 node(s)" in got.stderr
    assert "you are not an allowed requester of 'flood_readings'" in got.stderr

    typo = ["--dataset", FLOOD_TABLE, "--features", FEATURES + ",rain_2h", "--label", FLOOD_LABEL]
    got = train(fed_toml, "--purpose", FLOOD_PURPOSE, *typo)
    assert got.returncode == 3
    assert "INVALID_ARGUMENT: unknown column 'rain_2h' in dataset 'flood_readings'" in got.stderr

    got = train(fed_toml, "--purpose", FLOOD_PURPOSE, "--dataset", "floods", "--features",
                FEATURES, "--label", FLOOD_LABEL)  # fmt: skip
    assert got.returncode == 3
    assert "NOT_FOUND: no dataset 'floods' at this node (it serves: flood_readings)" in got.stderr


def test_train_has_no_demo_dataset_or_columns(fed_toml: Path) -> None:
    got = train(fed_toml, "--purpose", FLOOD_PURPOSE)
    assert got.returncode == 2
    assert "Missing option" in got.stderr and "--dataset" in got.stderr
    got = train(fed_toml, "--purpose", FLOOD_PURPOSE, "--dataset", FLOOD_TABLE)
    assert got.returncode == 2 and "--features" in got.stderr
