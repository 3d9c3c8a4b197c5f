"""Federated training as deployed: SuperLink + 3 SuperNodes + 3 agency nodes, all real
processes on 127.0.0.1 with TLS (Flower) and mTLS (datafed), driven by ``datafed train``;
then the auditor's checks.

First ``datafed train --start-superlink`` runs its own SuperLink (certificate of role
``superlink``) with a model factory that fails on purpose: the command must name the
real cause. Then a 3-round SecAgg+ job joins the standing SuperLink with a model factory
the offices allow and ``--run-config`` values, printing a line per round; one agency's
SuperNode shuts down as round 3 starts. The auditor exports the ledgers, verifies them,
reconciles the job and traces the model's lineage. Flower's SuperNodes poll every few
seconds and start a new ClientApp process per message, so a round takes tens of seconds:
the test keeps to the minimum (evaluation after the last round only). Refusals are tested
on the same ClientApp and nodes without the SuperLink in tests/unit/fl/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from audit.export import ExportDir
from audit.records import decode_leaf
from datafed import pki
from datafed.fl.lineage import format_lineage, model_lineage
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs, flood_policy
from datafed.fl.superlink import free_port
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.federation import LocalFederation
from nodes.context import ledger_origin
from nodes.fl.local import LocalFlower

pytestmark = pytest.mark.slow
COLUMNS = ["--dataset", FLOOD_TABLE, "--features", ",".join(FLOOD_FEATURES), "--label", FLOOD_LABEL]
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
DROPPED = "flood-uplands"
LOGISTIC = "tests.unit.fl.models:logistic"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlower]:
    # The model factories live in this repository's tests: every Flower process (the
    # ServerApp under the SuperLink, each SuperNode's ClientApp) must be able to import them.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    policy = flood_policy(models=("mlp", LOGISTIC))
    fed = LocalFederation.create(
        tmp_path_factory.mktemp("fl-deploy"), flood_node_specs(3, policy=policy)
    )
    flower = LocalFlower(fed)
    try:
        fed.start()
        flower.start()
        yield flower
    finally:
        flower.stop()
        codes = fed.stop()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
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


def test_train_starts_its_own_superlink_and_names_a_failing_factorys_cause(deployment, tmp_path):
    fed = deployment.write_fed_toml()
    files = deployment.superlink_files()
    own = tmp_path / "fed-own-superlink.toml"
    own.write_text(
        fed.read_text()
        + f'superlink_cert = "{files.cert}"\nsuperlink_key = "{files.key}"\n'
    )  # fmt: skip
    got = subprocess.run(
        [
            str(BIN / "datafed"), "train", "-f", str(own), "--purpose", FLOOD_PURPOSE,
            "--rounds", "1", *COLUMNS, "--start-superlink", "--superlink", f"127.0.0.1:{free_port()}",
            "--model", "tests.unit.fl.models:broken", "--log", str(tmp_path / "run.log"),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert got.returncode == 2, got.stdout + got.stderr
    last = got.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training job fl-") and "failed: the ServerApp failed: " in last
    assert "RuntimeError: deliberately broken model factory (6 features) (at models.py:" in last
    assert "SuperLink started on 127.0.0.1:" in got.stderr
    assert "Traceback" not in got.stderr  # ...which is in the run's log instead
    assert "Traceback" in (tmp_path / "run.log").read_text()


def test_three_secure_rounds_with_a_dropout_verify_and_trace(deployment, tmp_path):
    fed_toml = deployment.write_fed_toml()
    cmd = [
        str(BIN / "datafed"), "train", "-f", str(fed_toml), "--purpose", FLOOD_PURPOSE,
        "--rounds", "3", *COLUMNS, "--model", LOGISTIC, "--run-config", "local-epochs=1 eval-every=0",
        "--run-config", "lr=0.05", "--json", "--save-model", str(tmp_path / "model.npz"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # progress lines as the rounds happen
        lines.append(line.strip())
        if line.strip().startswith("round 2/3: 3 node(s) trained"):
            # round 3 starts now: that agency's SuperNode shuts down (off this thread)
            threading.Thread(target=lambda: deployment.stop_supernode(DROPPED)).start()
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, "\n".join(lines)
    result = json.loads(stdout)
    everyone = tuple(sorted(n.spec.name for n in deployment.fed.nodes))
    rest = tuple(n for n in everyone if n != DROPPED)
    progress = [ln for ln in lines if ln.startswith(("job opened", "round "))]
    assert progress[0] == f"job opened: 3 node(s) approved ({', '.join(everyone)})"
    assert progress[1].startswith("round 1/3: 3 node(s) trained")
    assert progress[-2].startswith(f"round 3/3: 2 node(s) trained ({', '.join(rest)})")
    assert progress[-1].startswith("round 3/3: 2 node(s) evaluated") and "accuracy" in progress[-1]
    # and one live line per node with its latest step (issue 14): the dropped node's is round 2
    assert any(f"{DROPPED}: round 2/3 " in ln for ln in lines), lines[-4:]
    assert any(ln.endswith(f"{rest[0]}: round 3/3 evaluated ✓") for ln in lines), lines[-4:]
    assert [tuple(r["participants"]) for r in result["rounds"]] == [everyone, everyone, rest]
    assert all(not r["mismatches"] for r in result["rounds"])
    assert result["settings"]["model"] == LOGISTIC and result["settings"]["lr"] == 0.05
    assert tuple(result["rounds"][-1]["eval_participants"]) == rest
    assert result["rounds"][-1]["eval_metrics"]["accuracy"] > 0.6
    with np.load(tmp_path / "model.npz") as saved:  # named as the model's state_dict
        assert sorted(saved.files) == ["0.bias", "0.weight"]

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
    job_id, model = result["job_id"], result["model_sha256"]
    done = audit_cli("reconcile", job_id, *map(str, exports.values()), *trust)
    assert done.returncode == 0, done.stdout + done.stderr

    logs = records(exports)
    fits = {
        n: [r.details["round"] for r in recs if r.job_id == job_id and r.operation == "fl_round"]
        for n, recs in logs.items()
    }  # fmt: skip
    assert fits == {n: ["1", "2", "3"] if n != DROPPED else ["1", "2"] for n in everyone}
    opened = {n: next(r for r in recs if r.job_id == job_id) for n, recs in logs.items()}
    assert {r.details["model"] for r in opened.values()} == {LOGISTIC}
    lineage = model_lineage(model, logs)
    assert lineage.ok, format_lineage(lineage)
    traced = audit_cli("lineage", model, *map(str, exports.values()), *trust)
    assert traced.returncode == 0 and "lineage OK" in traced.stdout, traced.stdout + traced.stderr
    assert [r.participants for r in lineage.rounds] == [everyone, everyone, rest]
    assert [r.model_in[0] for r in lineage.rounds] == [r["model_in"] for r in result["rounds"]]
    assert lineage.evaluated_by == rest and lineage.decisions == dict.fromkeys(everyone, "approved")
