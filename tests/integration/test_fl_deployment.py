"""Federated training as deployed: SuperLink + 3 SuperNodes + 3 agency nodes, all real
processes on 127.0.0.1 with TLS (Flower) and mTLS (datafed); then the auditor's checks.

A 3-round SecAgg+ job during which one agency's SuperNode shuts down as round 3 starts;
then the auditor exports the ledgers, verifies them, reconciles the job and traces the
model's lineage. Flower's SuperNodes poll every few seconds and start a new ClientApp
process per message, so a round takes tens of seconds: the test keeps to the minimum
(evaluation after the last round only). Refusals are tested on the same ClientApp and
nodes without the SuperLink in tests/unit/fl/test_app_flow.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.export import ExportDir
from audit.records import decode_leaf
from datafed import pki
from datafed.fl import train
from datafed.fl.lineage import format_lineage, model_lineage
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs
from datafed.local import LocalFederation
from nodes.context import ledger_origin
from nodes.fl.local import LocalFlower

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DROPPED = "flood-uplands"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlower]:
    fed = LocalFederation.create(tmp_path_factory.mktemp("fl-deploy"), flood_node_specs(3))
    flower = LocalFlower(fed)
    try:
        fed.start()
        flower.start()
        yield flower
    finally:
        flower.stop()
        codes = fed.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "datafed-audit"), *args], capture_output=True, text=True, timeout=120
    )


def export_ledgers(flower: LocalFlower, out: Path) -> dict[str, Path]:
    """The auditor exports every node's ledger over mTLS (LedgerService)."""
    fed = flower.fed
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")
    exports = {}
    for node in fed.nodes:
        target = out / node.spec.name
        done = audit_cli(
            "export", str(target), "--node", node.address, "--server-name", node.spec.name,
            "--ca", str(fed.pki_dir / "ca.crt"), "--cert", str(files.cert),
            "--key", str(files.key),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        exports[node.spec.name] = target
    return exports


def records(exports: dict[str, Path]):
    out = {}
    for name, path in exports.items():
        exp = ExportDir(path)
        out[name] = [decode_leaf(leaf)[1] for chunk in exp.leaf_chunks(4096) for leaf in chunk]
    return out


def test_three_secure_rounds_with_a_dropout_verify_and_trace(deployment, tmp_path):
    stopped: list[int | None] = []

    def progress(line: str) -> None:
        if "[ROUND 3]" in line and not stopped:
            stopped.append(None)  # once; stop the SuperNode gracefully, off this thread
            threading.Thread(target=lambda: deployment.stop_supernode(DROPPED)).start()

    result = train(
        deployment.fed_toml,
        purpose=FLOOD_PURPOSE,
        rounds=3,
        overrides={"eval-every": 0, "local-epochs": 1},
        progress=progress,
    )
    everyone = tuple(sorted(n.spec.name for n in deployment.fed.nodes))
    rest = tuple(n for n in everyone if n != DROPPED)
    assert [r.participants for r in result.rounds] == [everyone, everyone, rest]
    assert all(not r.mismatches for r in result.rounds)
    assert result.rounds[-1].eval_participants == rest and result.accuracy > 0.6

    exports = export_ledgers(deployment, tmp_path)
    fed = deployment.fed
    vkeys = []
    for node in fed.nodes:
        key = pki.party_paths(fed.pki_dir, "node", node.spec.name).signing_key
        out = audit_cli("vkey", str(key), "--name", ledger_origin(node.spec.name))
        assert out.returncode == 0, out.stderr
        vkeys.append(out.stdout.strip())
    policy = tmp_path / "audit-policy.toml"
    policy.write_text("logs = [" + ", ".join(f'"{v}"' for v in vkeys) + "]\n")
    for name, path in exports.items():
        done = audit_cli("verify", str(path), "-p", str(policy), "--deep", "--no-witnesses")
        assert done.returncode == 0 and f"OK datafed/ledger/{name}" in done.stdout, done.stdout
    trust = ["-p", str(policy), "--no-witnesses"]  # no witnesses in this deployment
    done = audit_cli("reconcile", result.job_id, *map(str, exports.values()), *trust)
    assert done.returncode == 0, done.stdout + done.stderr

    logs = records(exports)
    fits = {
        n: [r.details["round"] for r in recs if r.job_id == result.job_id and r.operation == "fl_round"]
        for n, recs in logs.items()
    }  # fmt: skip
    assert fits == {n: ["1", "2", "3"] if n != DROPPED else ["1", "2"] for n in everyone}
    lineage = model_lineage(result.model_sha256, logs)
    assert lineage.ok, format_lineage(lineage)
    traced = audit_cli("lineage", result.model_sha256, *map(str, exports.values()), *trust)
    assert traced.returncode == 0 and "lineage OK" in traced.stdout, traced.stdout + traced.stderr
    assert [r.participants for r in lineage.rounds] == [everyone, everyone, rest]
    assert [r.model_in[0] for r in lineage.rounds] == [r.model_in for r in result.rounds]
    assert lineage.evaluated_by == rest and lineage.decisions == dict.fromkeys(everyone, "approved")
