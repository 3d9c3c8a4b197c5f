"""Federated learning: round time with datafed's mods vs the same Flower app without them,
and SecAgg+ vs plain FedAvg (docs/bench.md rows ``fl.round`` and ``fl.round_secaggplus``).

One round = Flower's fit workflow (SecAgg+'s four stages, or FedAvg's one) plus federated
evaluation, for 3 district flood offices (1640 rows, one local epoch, an MLP 6-16-1).
Messages go to the ClientApps in this process (:class:`datafed.fl.direct.DirectGrid`), so
the numbers compare the apps themselves rather than SuperNode polling or Ray scheduling.

- ``fl.round`` ours: datafed's ClientApp (mods: open/policy, ledger record per round and
  phase, budget, DP off) reading its rows from three real ``datafed-node`` processes over
  mTLS, with the audited strategy; baseline: the same ClientApp code without the mods
  (``plain_app``) over the same rows in memory, with Flower's FedAvg as it comes.
- ``fl.round_secaggplus`` ours: the baseline app under datafed's SecAgg+ (Flower's
  ``secaggplus_mod`` behind datafed's ``secagg_mod``, datafed's workflow that survives
  early dropouts), twice: against Flower's own SecAgg+ with the same parameters
  (``SecAggPlusWorkflow`` and ``secaggplus_mod`` as they come: shares, threshold,
  clipping range, quantisation, max weight), and against the same app without SecAgg+
  (FedAvg alone).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.server.workflow import SecAggPlusWorkflow
from sizes import size

from datafed.client.config import FederationConfig, NodeEndpoint
from datafed.fl.direct import DirectGrid, RoundDriver
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs
from datafed.fl.requests import sign_training_bundle
from datafed.fl.settings import RunSettings
from datafed.fl.spec import TrainingSpec
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.fl.workflow import open_job
from datafed.local.federation import LocalFederation
from datafed.pki.ca import party_paths
from datafed.pki.tls import PartyFiles
from datafed.wire.statement import new_job_id
from nodes.fl.client_app import app, client_fn, plain_app

NODES = 3
ROUNDS = size(7, 1)
LOCAL_EPOCHS = 2
PARAMS = {"nodes": NODES, "rows": 1640, "model": "mlp:16", "local_epochs": LOCAL_EPOCHS}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    federation = LocalFederation.create(
        tmp_path_factory.mktemp("bench-fl"), flood_node_specs(NODES)
    )
    federation.start()
    try:
        yield federation
    finally:
        federation.stop()


def _settings(**kw: object) -> RunSettings:
    return RunSettings(min_nodes=NODES, local_epochs=LOCAL_EPOCHS, stage_timeout=0.0, **kw)  # type: ignore[arg-type]


def ours_driver(fed: LocalFederation) -> RoundDriver:
    files = party_paths(fed.pki_dir, "analyst", "alice")
    fc = FederationConfig(
        analyst="alice",
        tls=PartyFiles(
            ca=fed.pki_dir / "ca.crt", cert=files.cert, key=files.key, signing_key=files.signing_key
        ),
        nodes=[NodeEndpoint(name=n.spec.name, address=n.address) for n in fed.nodes],
    )
    spec = TrainingSpec(FLOOD_TABLE, FLOOD_FEATURES, FLOOD_LABEL, rounds=1000)
    job = new_job_id("fl")
    settings = _settings(bundle=sign_training_bundle(fc, spec, purpose=FLOOD_PURPOSE, job_id=job))
    node_cfgs = [
        {"datafed-node-config": str(n.config), "datafed-node-address": n.address} for n in fed.nodes
    ]
    grid = DirectGrid(app, node_cfgs, settings.to_run_config(), run_id=hash(job) % 10**9)
    opened = open_job(grid, list(grid.get_node_ids()), job, None)
    assert not opened.refusals and len(opened.approved) == NODES
    return RoundDriver(grid, settings, audited=True, node_names=opened.approved)


def plain_driver(secagg: bool, flower_secagg: bool = False) -> RoundDriver:
    settings = _settings(datafed=False, sim_data="flood:7", secagg=secagg)
    parts = [{"partition-id": i, "num-partitions": NODES} for i in range(NODES)]
    if not flower_secagg:
        grid = DirectGrid(plain_app, parts, settings.to_run_config(), run_id=11 if secagg else 12)
        return RoundDriver(grid, settings, audited=False)
    # Flower's own SecAgg+, the same parameters, nothing of datafed's around it.
    flower_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    grid = DirectGrid(flower_app, parts, settings.to_run_config(), run_id=13)
    workflow = SecAggPlusWorkflow(
        num_shares=settings.secagg_shares,
        reconstruction_threshold=settings.secagg_threshold,
        max_weight=settings.secagg_max_weight,
        clipping_range=settings.secagg_clip,
        timeout=settings.stage_timeout or None,
    )
    return RoundDriver(grid, settings, audited=False, fit_workflow=workflow)


def _run(benchmark, driver: RoundDriver) -> None:
    benchmark.pedantic(driver.step, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_round_ours(benchmark, bench_row, fed):
    driver = ours_driver(fed)
    bench_row("fl.round", role="ours", unit="s", params=PARAMS, baseline_name="flower-plain-app")
    _run(benchmark, driver)
    assert all(not log.failures for log in driver.context.strategy.rounds.values())


def test_round_plain(benchmark, bench_row):
    driver = plain_driver(secagg=True)
    bench_row(
        "fl.round", role="baseline", unit="s", params=PARAMS, baseline_name="flower-plain-app"
    )
    _run(benchmark, driver)


def test_round_secaggplus(benchmark, bench_row):
    driver = plain_driver(secagg=True)
    for base in ("flower-secaggplus", "fedavg"):
        bench_row(
            "fl.round_secaggplus",
            role="ours",
            unit="s",
            params=PARAMS,
            baseline_name=base,
            pair=f"secaggplus|{base}",
        )
    _run(benchmark, driver)


def test_round_flower_secaggplus(benchmark, bench_row):
    driver = plain_driver(secagg=True, flower_secagg=True)
    bench_row(
        "fl.round_secaggplus",
        role="baseline",
        unit="s",
        params=PARAMS,
        baseline_name="flower-secaggplus",
        pair="secaggplus|flower-secaggplus",
    )
    _run(benchmark, driver)


def test_round_fedavg(benchmark, bench_row):
    driver = plain_driver(secagg=False)
    bench_row(
        "fl.round_secaggplus",
        role="baseline",
        unit="s",
        params=PARAMS,
        baseline_name="fedavg",
        pair="secaggplus|fedavg",
    )
    _run(benchmark, driver)
