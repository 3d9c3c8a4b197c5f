"""Model factories, run config, progress and ServerApp failures, on the real app flow.

The ServerApp workflow and the ClientApp (with the agency's mods) run against real
in-process nodes (TrainingService, ledger, policy) through :class:`DirectGrid`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from datafed.fl.direct import DirectGrid
from datafed.fl.errors import TrainingFailed
from datafed.fl.local import flood_policy
from datafed.fl.progress import Progress, parse_progress
from datafed.fl.requests import sign_training_bundle
from datafed.fl.result import check_result, find_result
from datafed.fl.server_app import describe_failure, main, run_job
from datafed.fl.settings import RunSettings, parse_run_config
from datafed.fl.spec import TrainingSpec, model_allowed
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.federation import LocalFederation
from datafed.wire.statement import new_job_id
from nodes.fl.client_app import app

from . import models
from .conftest import PURPOSE, flood_specs
from .test_app_flow import job_records
from .test_training_servicer import fed_config

LOGISTIC = "tests.unit.fl.models:logistic"
BROKEN = "tests.unit.fl.models:broken"
COUNTED = "tests.unit.fl.models:counted"
SPEC = TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=2)
_RUN = iter(range(7000, 8000))


def job(fed, nodes, spec, **settings):
    """A signed job's settings and a DirectGrid over ``nodes``."""
    job_id = new_job_id("fl")
    bundle = sign_training_bundle(fed_config(fed), spec, purpose=PURPOSE, job_id=job_id)
    s = RunSettings(
        num_server_rounds=spec.rounds, min_nodes=len(nodes), bundle=bundle, local_epochs=1,
        model=spec.model, **settings,
    )  # fmt: skip
    node_cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address} for n in nodes
    ]
    grid = DirectGrid(app, node_cfgs, s.to_run_config(), run_id=next(_RUN))
    return job_id, s, grid, Context(grid.run.run_id, 0, {}, RecordDict(), s.to_run_config())


@pytest.fixture(scope="module")
def factory_fed(tmp_path_factory):
    """Flood offices whose policy also allows the ``logistic`` and ``counted`` factories."""
    policy = flood_policy(models=("mlp", LOGISTIC, COUNTED))
    return LocalFederation.create(tmp_path_factory.mktemp("factoryfed"), flood_specs(policy=policy))


def test_a_factory_model_trains_is_recorded_and_reports_each_round(factory_fed, runner):
    nodes = [runner.start(n.config) for n in factory_fed.nodes]
    steps: list[Progress] = []
    job_id, s, grid, ctx = job(factory_fed, nodes, replace(SPEC, model=LOGISTIC))
    result = check_result(run_job(grid, ctx, s, steps.append))
    assert [w.shape for w in result.weights] == [(1, len(FLOOD_FEATURES)), (1,)]
    assert result.accuracy is not None and result.accuracy > 0.6
    names = tuple(sorted(n.name for n in nodes))
    assert [(p.phase, p.round, p.nodes) for p in steps] == [
        ("open", 0, names),
        ("fit", 1, names),
        ("evaluate", 1, names),
        ("fit", 2, names),
        ("evaluate", 2, names),
    ]
    assert "accuracy" in steps[-1].metrics and steps[-1].rounds == 2
    assert steps[1].describe().startswith("round 1/2: 3 node(s) trained (flood-coastal")
    assert parse_progress("log: " + steps[-1].to_line()) == steps[-1]
    for recs in job_records(nodes, job_id).values():
        assert recs[0].decision == "approved" and recs[0].details["model"] == LOGISTIC


def test_a_node_refuses_a_factory_it_does_not_allow_and_never_runs_it(flood_fed, runner):
    # flood_fed's offices allow only the built-in MLP: a factory is code they would run.
    nodes = [runner.start(n.config) for n in flood_fed.nodes]
    before = models.CALLS["counted"]
    job_id, s, grid, ctx = job(flood_fed, nodes, replace(SPEC, model=COUNTED))
    result = run_job(grid, ctx, s)
    assert result.status == "refused" and not result.rounds
    assert all(
        r == f"PERMISSION_DENIED: model {COUNTED!r} is not in allowed_models"
        for r in result.refusals.values()
    ), result.refusals
    assert models.CALLS["counted"] == before + 1  # the ServerApp's initial model, nothing more
    for recs in job_records(nodes, job_id).values():
        assert [(r.operation, r.decision) for r in recs] == [("fl_train", "denied")]


def test_a_failing_model_factory_reports_its_cause_before_any_node_is_asked(
    flood_fed, runner, tmp_path
):
    nodes = [runner.start(n.config) for n in flood_fed.nodes]
    sizes = [n.ctx.ledger.head().size for n in nodes]
    job_id, s, grid, _ = job(flood_fed, nodes, replace(SPEC, model=BROKEN))
    out = tmp_path / "result.txt"
    cfg = replace(s, result_path=str(out)).to_run_config()
    main(grid, Context(grid.run.run_id, 0, {}, RecordDict(), cfg))  # Flower's entry point
    result = find_result(out.read_text().splitlines())
    assert result is not None and result.status == "failed" and result.job_id == job_id
    assert (
        "the ServerApp failed: RuntimeError: deliberately broken model factory (6 features) "
        "(at models.py:" in result.error
    ), result.error
    with pytest.raises(TrainingFailed, match="deliberately broken model factory"):
        check_result(result)
    assert [n.ctx.ledger.head().size for n in nodes] == sizes  # no node was even asked


def test_describe_failure_names_type_place_and_root_cause():
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError("outer") from exc
    except ValueError as exc:
        text = describe_failure(exc)
    assert text.startswith("ValueError: outer (at test_model_factory.py:")
    assert "; caused by KeyError: 'inner' (at test_model_factory.py:" in text


def test_model_references_and_allowed_models():
    assert model_allowed("mlp:32,16", ["mlp"]) and not model_allowed("mlp:8", [LOGISTIC])
    assert model_allowed(LOGISTIC, [LOGISTIC]) and not model_allowed(LOGISTIC, ["mlp"])
    assert not model_allowed("tests.unit.fl.models:logistic2", [LOGISTIC])  # exact names only
    from datafed.fl.model import build_model, initial_weights

    with pytest.raises(TypeError, match=r"not a torch\.nn\.Module"):
        build_model(3, "builtins:abs")  # callable, but makes no model
    with pytest.raises(ValueError, match="cannot import model factory"):
        build_model(3, "tests.unit.fl.nosuch:f")
    a, b = initial_weights(6, LOGISTIC, seed=3), initial_weights(6, LOGISTIC, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded at the server


def test_run_config_takes_flowers_form_and_refuses_what_the_analyst_may_not_set():
    got = parse_run_config(["lr=0.01 local-epochs=3", 'strategy="fedprox"', "batch-size=64"])
    assert got == {"lr": 0.01, "local-epochs": 3, "strategy": "fedprox", "batch-size": 64}
    assert parse_run_config(["learning-rate=0.5"]) == {"lr": 0.5}  # Flower templates' name
    for bad, msg in [
        ("bundle=x", "cannot be set here"),  # the signed requests are datafed's
        ("num-server-rounds=9", "cannot be set here"),  # rounds are signed (--rounds)
        ("lr", "expects key=value"),
        ("local-epochs=two", "must be int"),
        ("lr=0", "lr must be positive"),
        ("local-epochs=100000", r"local-epochs must be in \[1, 100\]"),  # work at every agency
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_run_config([bad])


def test_agencies_refuse_a_run_config_asking_for_unbounded_work(flood_fed, runner):
    # A hostile analyst (or SuperLink) submits the run with its own run config: the
    # agencies' ClientApps parse it themselves and refuse to open the job.
    nodes = [runner.start(n.config) for n in flood_fed.nodes]
    job_id, s, grid, ctx = job(flood_fed, nodes, SPEC)
    for node_ctx in grid.contexts.values():
        node_ctx.run_config["local-epochs"] = 100_000
    result = run_job(grid, ctx, s)
    assert result.status == "refused" and len(result.refusals) == 3
    assert all("local-epochs must be in [1, 100]" in r for r in result.refusals.values())
    assert all(not recs for recs in job_records(nodes, job_id).values())  # nothing opened
