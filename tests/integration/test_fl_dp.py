"""Training on DP datasets against real nodes: nothing exact leaves, delta is the policy's.

Three flood offices run as real node processes (``datafed-node serve``, mTLS, ledgers)
with a DP policy on their readings; the analyst plays its own ServerApp over the real
ClientApp and its mods (:class:`~datafed.fl.direct.DirectGrid` delivers Flower's messages
in this process instead of a SuperLink): the analyst controls the strategy, so it sends
whatever messages and weights it likes.

The attack (issue 17, class 2): the strategy sends hand-made weights to the *evaluate*
step -- a logistic model with zero weights and bias 1 gives every row the logit 1, so the
exact loss is ``softplus(1) - mean(label)``: each node's label mean, and with the exact
``num_examples`` its label sum, for no epsilon at all (the old code charged only fits).
The open reply and every fit reply also carried the node's exact row count.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters

from audit.records import decode_leaf
from datafed.fl.direct import DirectGrid
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs
from datafed.fl.requests import sign_training_bundle
from datafed.fl.settings import RunSettings
from datafed.fl.spec import DpParams, TrainingSpec
from datafed.fl.strategy import KEY_ROUND
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.fl.workflow import open_job
from datafed.local.federation import LocalFederation
from datafed.wire.statement import new_job_id
from nodes.fl.client_app import app
from tests.unit.fl.test_training_servicer import fed_config

pytestmark = pytest.mark.slow
EVALUATES = "flood-coastal"  # the only office whose policy allows evaluation
POLICY = f"""\
allowed_requesters = ["alice"]
allowed_purposes = ["{FLOOD_PURPOSE}"]
allowed_operations = ["training"]
allowed_models = ["mlp"]

[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 20.0
budget_delta = 1e-4
"""
LOGISTIC = "mlp:"  # logistic regression: weights (1, 6) and bias (1,)
EPS, DELTA = 0.5, 1e-5
_RUN = iter(range(7000, 8000))


@pytest.fixture(scope="module")
def dpflood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = flood_node_specs(3)
    for s in specs:
        s.policy_toml = POLICY + ("allow_evaluation = true\n" if s.name == EVALUATES else "")
    fed = LocalFederation.create(tmp_path_factory.mktemp("dpflood"), specs)
    fed.start()
    try:
        yield fed
    finally:
        fed.stop()


@dataclass
class Analyst:
    """The analyst's own ServerApp: a grid over the real ClientApps, one per node."""

    fed: LocalFederation
    grid: DirectGrid
    job: str
    names: dict[int, str]

    def send(self, kind: str, weights: list[np.ndarray], rnd: int) -> dict[str, Message]:
        params = ndarrays_to_parameters(weights)
        if kind == MessageType.EVALUATE:
            content = compat.evaluateins_to_recorddict(EvaluateIns(params, {KEY_ROUND: rnd}), True)
        else:
            content = compat.fitins_to_recorddict(FitIns(params, {KEY_ROUND: rnd}), True)
        msgs = [self.grid.create_message(content, kind, nid, str(rnd)) for nid in self.names]
        replies = self.grid.send_and_receive(msgs)
        return {self.names[r.metadata.src_node_id]: r for r in replies}


def analyst(fed: LocalFederation, spec: TrainingSpec) -> tuple[Analyst, dict[str, object]]:
    """Open a job at every node the way the ServerApp does; return the open replies."""
    job = new_job_id("fl")
    bundle = sign_training_bundle(fed_config(fed), spec, purpose=FLOOD_PURPOSE, job_id=job)
    settings = RunSettings(
        num_server_rounds=spec.rounds, min_nodes=3, bundle=bundle, secagg=False, local_epochs=1
    )
    cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address} for n in fed.nodes
    ]
    grid = DirectGrid(app, cfgs, settings.to_run_config(), run_id=next(_RUN))
    outcome = open_job(grid, sorted(grid.get_node_ids()), job, None)
    return Analyst(fed, grid, job, dict(outcome.approved)), {
        "rows": outcome.rows,
        "refusals": outcome.refusals,
    }


def labels(fed: LocalFederation, node: str) -> np.ndarray:
    path = fed.root / "nodes" / node / "data" / f"{FLOOD_TABLE}.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return np.array([r[0] for r in db.execute(f"SELECT {FLOOD_LABEL} FROM {FLOOD_TABLE}")])


def records(fed: LocalFederation, node: str, job: str) -> list:
    path = fed.root / "nodes" / node / "state" / "ledger.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT leaf FROM entries ORDER BY idx")
        return [r for r in (decode_leaf(bytes(x[0]))[1] for x in rows) if r.job_id == job]


def test_evaluation_on_a_dp_dataset_reveals_nothing_exact(dpflood):
    spec = TrainingSpec(
        FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=2, model=LOGISTIC,
        dp=DpParams.local(EPS, DELTA, 1.0), secagg=False,
    )  # fmt: skip
    who, opened = analyst(dpflood, spec)
    names = sorted(n.spec.name for n in dpflood.nodes)
    assert sorted(who.names.values()) == names and not opened["refusals"]
    # the open reply: no row count from a DP dataset (the ServerApp reads 0)
    assert opened["rows"] == dict.fromkeys(names, 0)

    crafted = [np.zeros((1, len(FLOOD_FEATURES)), np.float32), np.ones(1, np.float32)]
    softplus1 = math.log1p(math.e)
    seen: dict[str, list[tuple[float, int, dict]]] = {n: [] for n in names}
    for rnd in (1, 2):  # the same hand-made weights, twice
        for node, reply in who.send(MessageType.EVALUATE, crafted, rnd).items():
            if reply.has_error():
                seen[node].append((math.nan, -1, {"error": reply.error.reason}))
                continue
            res = compat.recorddict_to_evaluateres(reply.content)
            seen[node].append((float(res.loss), int(res.num_examples), dict(res.metrics)))
    for node in names:
        y = labels(dpflood, node)
        # what the old code sent back: every row has the logit 1 (so predicts positive)
        exact = (softplus1 - float(np.mean(y)), float(np.mean(y)))
        recs = records(dpflood, node, who.job)
        evals = [(r.decision, r.epsilon) for r in recs if r.operation == "fl_evaluate"]
        if node != EVALUATES:
            # policy without allow_evaluation: refused, recorded, nothing computed or charged
            assert all(m.get("error") for _, _, m in seen[node]), seen[node]
            assert evals == [("denied", 0.0), ("denied", 0.0)]
            assert all("allow_evaluation" in r.reason for r in recs if r.decision == "denied")
            continue
        (loss1, _, m1), (loss2, _, m2) = seen[node]
        # noised: not the exact metrics, nor the same twice; the label mean ("positives")
        # does not leave at all. (The noisy row count may hit the exact one by chance: its
        # noise is checked statistically, tests/unit/nodes/test_dp_audit.py.)
        assert (loss1, m1["accuracy"]) != pytest.approx(exact, abs=1e-6)
        assert (loss2, m2["accuracy"]) != pytest.approx(exact, abs=1e-6)
        assert (loss1, m1["accuracy"]) != (loss2, m2["accuracy"])
        assert set(m1) == set(m2) == {"accuracy", "datafed-node", "datafed-model-in",
                                      "datafed-update"}  # fmt: skip
        # ...and each evaluation was charged like a training round, before it left
        assert evals == [("released", EPS), ("released", EPS)]
        assert all("rows" not in r.details and str(len(y)) not in r.reason for r in recs)

    # a fit reply: a constant weight and no training loss, whatever the rows
    for node, reply in who.send(MessageType.TRAIN, crafted, 1).items():
        assert not reply.has_error(), reply.error.reason
        res = compat.recorddict_to_fitres(reply.content, keep_input=True)
        assert res.num_examples == 100_000 and "train-loss" not in res.metrics
        fit = [r for r in records(dpflood, node, who.job) if r.operation == "fl_round"]
        assert [(r.decision, r.epsilon, r.details["delta"]) for r in fit] == [
            ("released", EPS, repr(DELTA))
        ]


@pytest.mark.parametrize(
    ("dp", "rounds"),
    [
        (DpParams.local(EPS, 0.9, 1.0), 1),  # datafed train --dp-delta 0.9
        (DpParams.local(EPS, 6e-5, 1.0), 2),  # each round within, the job (1.2e-4) not
    ],
)
def test_training_delta_outside_the_policy_is_refused_before_admission(dpflood, dp, rounds):
    spec = TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=rounds, dp=dp)
    who, opened = analyst(dpflood, spec)
    assert not who.names  # no node approved
    refusals = opened["refusals"]
    assert sorted(refusals) == sorted(n.spec.name for n in dpflood.nodes)
    for node, why in refusals.items():
        assert why.startswith("PERMISSION_DENIED: ") and "max_delta_per_job" in why, why
        # refused before admission: one `denied` entry, no approval, nothing charged
        recs = records(dpflood, node, who.job)
        assert [(r.operation, r.decision, r.epsilon) for r in recs] == [("fl_train", "denied", 0.0)]
        assert "delta" not in recs[0].details


def test_a_dp_job_trains_under_secagg_where_evaluation_is_refused(dpflood):
    """The ServerApp's own workflow end to end: updates released under DP and SecAgg+;
    only the office that allows it evaluates, the others' refusals do not fail the job."""
    from flwr.app import Context, RecordDict

    from datafed.fl.server_app import run_job
    from datafed.fl.training import check_result

    spec = TrainingSpec(
        FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=1, dp=DpParams.local(EPS, DELTA, 1.0)
    )
    job = new_job_id("fl")
    bundle = sign_training_bundle(fed_config(dpflood), spec, purpose=FLOOD_PURPOSE, job_id=job)
    s = RunSettings(num_server_rounds=1, min_nodes=3, bundle=bundle, local_epochs=1)
    cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address}
        for n in dpflood.nodes
    ]
    grid = DirectGrid(app, cfgs, s.to_run_config(), run_id=next(_RUN))
    result = check_result(
        run_job(grid, Context(grid.run.run_id, 0, {}, RecordDict(), s.to_run_config()), s)
    )
    (only,) = result.rounds
    assert len(only.participants) == 3 and not only.mismatches
    assert only.num_examples == 3 * 100_000  # constant weights, not row counts
    assert only.eval_participants == (EVALUATES,)
    assert set(result.nodes.values()) == {0}
