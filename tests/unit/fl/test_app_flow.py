"""The real ServerApp workflow and ClientApp (with mods) against real in-process nodes.

Messages go through :class:`DirectGrid` (no SuperLink, no Ray), so these tests are fast;
the node side is the real TrainingService with its ledger, policy and budget.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from flwr.app import Context, RecordDict

from audit.usage import reconcile
from datafed.fl.direct import DirectGrid
from datafed.fl.errors import TrainingRefused
from datafed.fl.lineage import format_lineage, model_lineage
from datafed.fl.requests import sign_training_bundle
from datafed.fl.server_app import run_job
from datafed.fl.settings import RunSettings
from datafed.fl.spec import DpParams, TrainingSpec
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.fl.training import check_result
from datafed.wire.statement import new_job_id
from nodes.fl.client_app import app
from nodes.policy.budget import LedgerBudget

from .conftest import PURPOSE
from .test_training_servicer import fed_config

SPEC = TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=2)
_RUN = iter(range(5000, 6000))


def run(fed, nodes, *, spec=SPEC, purpose=PURPOSE, grid_cls=DirectGrid, **settings):
    job = new_job_id("fl")
    bundle = sign_training_bundle(fed_config(fed), spec, purpose=purpose, job_id=job)
    s = RunSettings(
        num_server_rounds=spec.rounds, min_nodes=len(nodes), bundle=bundle, local_epochs=1,
        secagg=spec.secagg, **settings,
    )  # fmt: skip
    cfg = s.to_run_config()
    node_cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address} for n in nodes
    ]
    run_id = next(_RUN)
    grid = grid_cls(app, node_cfgs, cfg, run_id=run_id)
    return job, run_job(grid, Context(run_id, 0, {}, RecordDict(), cfg), s)


def job_records(nodes, job):
    out = {}
    for n in nodes:
        led = n.ctx.ledger
        out[n.name] = [
            r for r in (led.get_record(i) for i in range(led.head().size)) if r.job_id == job
        ]
    return out


@pytest.fixture
def nodes(flood_fed, runner):
    return [runner.start(n.config) for n in flood_fed.nodes]


def test_secure_job_is_recorded_and_traceable(flood_fed, nodes):
    job, result = run(flood_fed, nodes)
    result = check_result(result)
    names = sorted(n.name for n in nodes)
    assert [r.participants for r in result.rounds] == [tuple(names)] * 2
    assert all(not r.mismatches and not r.failures for r in result.rounds)
    assert result.nodes == {"flood-coastal": 900, "flood-riverside": 500, "flood-uplands": 240}
    assert 0.6 < result.accuracy < 1.0
    logs = job_records(nodes, job)
    for recs in logs.values():
        ops = [(r.operation, r.decision, r.details.get("round")) for r in recs]
        assert ops == [
            ("fl_train", "approved", None),
            ("fl_round", "released", "1"),
            ("fl_evaluate", "released", "1"),
            ("fl_round", "released", "2"),
            ("fl_evaluate", "released", "2"),
        ]
        assert {r.protection for r in recs} == {"fl-secagg"}
        assert recs[1].details["model_in"] == result.rounds[0].model_in
        assert recs[3].details["model_in"] == result.rounds[1].model_in
        assert recs[4].details["model_in"] == result.model_sha256
    assert {n: result.rounds[1].updates[n] for n in names} == {
        n: logs[n][3].result_digest for n in names
    }
    assert reconcile(job, logs) == []
    lineage = model_lineage(result.model_sha256, logs)
    assert lineage.ok, format_lineage(lineage)
    assert lineage.job_id == job and lineage.requester == "alice" and lineage.purpose == PURPOSE
    assert [r.participants for r in lineage.rounds] == [tuple(names)] * 2
    assert lineage.evaluated_by == tuple(names)
    assert "lineage OK" in format_lineage(lineage)


def test_refused_job_stops_before_any_round(flood_fed, nodes):
    job, result = run(flood_fed, nodes, purpose="marketing")
    assert result.status == "refused" and not result.rounds
    assert set(result.refusals) == {n.name for n in nodes}
    assert all("PERMISSION_DENIED: purpose 'marketing'" in r for r in result.refusals.values())
    with pytest.raises(TrainingRefused, match="training refused by 3 node"):
        check_result(result)
    for recs in job_records(nodes, job).values():
        assert [(r.operation, r.decision) for r in recs] == [("fl_train", "denied")]


class DropThird(DirectGrid):
    """The third node's SuperNode dies when round 2 starts."""

    def push_messages(self, messages):
        messages = list(messages)
        if any(m.metadata.group_id == "2" for m in messages):
            self.drop(max(self.contexts))
        return super().push_messages(messages)


def test_dropout_round_completes_and_ledgers_show_who_took_part(flood_fed, nodes):
    job, result = run(flood_fed, nodes, grid_cls=DropThird, eval_every=0)
    result = check_result(result)
    first, second = result.rounds
    assert len(first.participants) == 3 and second.participants == (
        "flood-coastal", "flood-riverside",
    )  # fmt: skip
    assert second.model_out and second.eval_participants == second.participants
    logs = job_records(nodes, job)
    assert [r.details["round"] for r in logs["flood-uplands"] if r.operation == "fl_round"] == ["1"]
    lineage = model_lineage(result.model_sha256, logs)
    assert lineage.ok, format_lineage(lineage)
    assert [len(r.participants) for r in lineage.rounds] == [3, 2]


def test_nodes_refuse_rounds_beyond_the_approved_ones(flood_fed, nodes):
    # The ServerApp (at the SuperLink) asks for 3 rounds; the analyst signed for 2.
    job = new_job_id("fl")
    bundle = sign_training_bundle(fed_config(flood_fed), SPEC, purpose=PURPOSE, job_id=job)
    s = RunSettings(num_server_rounds=3, min_nodes=3, bundle=bundle, local_epochs=1, eval_every=0)
    cfg = s.to_run_config()
    node_cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address} for n in nodes
    ]
    grid = DirectGrid(app, node_cfgs, cfg, run_id=next(_RUN))
    result = run_job(grid, Context(grid.run.run_id, 0, {}, RecordDict(), cfg), s)
    assert result.rounds[2].participants == ()
    for recs in job_records(nodes, job).values():
        third = [r for r in recs if r.details.get("round") == "3" and r.operation == "fl_round"]
        assert [(r.decision, r.reason[:17]) for r in third] == [("denied", "PERMISSION_DENIED")]


def test_dp_rounds_are_charged_to_the_budget(flood_fed, nodes):
    for n in nodes:
        n.ctx.policy.budget = LedgerBudget(lambda ds: (100.0, 1e-3))
    spec = replace(SPEC, dp=DpParams.local(0.5, 1e-5, 1.0))
    job, result = run(flood_fed, nodes, spec=spec, eval_every=0)
    result = check_result(result)
    for recs in job_records(nodes, job).values():
        fits = [r for r in recs if r.operation == "fl_round"]
        assert [(r.epsilon, r.details["delta"]) for r in fits] == [(0.5, "1e-05")] * 2
        assert all(r.details["dp"].startswith("local-gaussian eps=0.5") for r in recs[1:])
        # the evaluation after the last round leaves noised and is charged like a round
        (ev,) = [r for r in recs if r.operation == "fl_evaluate"]
        assert (ev.decision, ev.epsilon, "delta" in ev.details) == ("released", 0.5, False)
    for n in nodes:
        assert n.ctx.policy.budget.spent_both("alice", FLOOD_TABLE) == (1.5, 2e-5)
    # what reached the analyst: no exact row count, a constant weight per update
    assert result.nodes == dict.fromkeys(result.nodes, 0)
    assert {r.num_examples for r in result.rounds} == {3 * 100_000}


def test_lineage_command_on_ledger_exports(flood_fed, nodes, tmp_path):
    """``datafed lineage`` verifies the exports against the pinned policy (as
    ``datafed-audit lineage`` does) and takes the model's key or its saved file."""
    import dataclasses

    import typer
    from typer.testing import CliRunner

    from audit.export import ExportDir, export_store
    from audit.note import SIG_ED25519, vkey
    from audit.records import decode_leaf, encode_body, encode_leaf
    from audit.vkeys import public_key_of
    from datafed import pki
    from datafed.cli.train import _save, register
    from nodes.context import ledger_origin

    job, result = run(flood_fed, nodes, eval_every=0)
    result = check_result(result)
    exports, vkeys = [], []
    for n in nodes:
        db = n.config.parent / "state" / "ledger.sqlite"
        exports.append(str(export_store(db, tmp_path / n.name)))
        key = pki.party_paths(flood_fed.pki_dir, "node", n.name).signing_key
        vkeys.append(vkey(ledger_origin(n.name), SIG_ED25519,
                          public_key_of(key.read_bytes(), key.name).key))  # fmt: skip
    policy = tmp_path / "audit-policy.toml"
    policy.write_text("logs = [" + ", ".join(f'"{v}"' for v in vkeys) + "]\n")
    trust = ["-p", str(policy), "--no-witnesses", "--allow-unsigned-tail"]
    model = tmp_path / "model.npz"
    _save(result, model)
    cli = typer.Typer()
    register(cli)
    digest = CliRunner().invoke(cli, ["model-digest", str(model)])
    assert digest.exit_code == 0 and digest.output.strip() == result.model_sha256
    for what in (result.model_sha256, str(model)):
        got = CliRunner().invoke(cli, ["lineage", what, *exports, *trust])
        assert got.exit_code == 0, got.output
        assert f"job {job}" in got.output and "lineage OK" in got.output
        assert "round 2: global model" in got.output
    missing = CliRunner().invoke(cli, ["lineage", "0" * 64, *exports, *trust])
    assert missing.exit_code == 2 and "no ledger records an evaluation" in missing.output
    # an operator rewrites a denial... any edited entry: both lineage commands refuse
    bad = tmp_path / "tampered"
    shutil.copytree(exports[0], bad)
    leaves = ExportDir(bad).leaves()
    index, record = decode_leaf(leaves[0])
    leaves[0] = encode_leaf(index, encode_body(dataclasses.replace(record, purpose="other")))
    (bad / "entries.bin").write_bytes(b"".join(len(x).to_bytes(4, "big") + x for x in leaves))
    refused = CliRunner().invoke(cli, ["lineage", str(model), str(bad), *exports[1:], *trust])
    assert refused.exit_code == 1, refused.output
    assert "entry-modified at entry 0" in refused.output and "lineage OK" not in refused.output
    unpinned = CliRunner().invoke(cli, ["lineage", str(model), *exports])
    assert unpinned.exit_code == 2 and "--policy" in unpinned.output
