"""A training round as deployed: ours beside a plain Flower deployment, in one run.

Everything is a real process on 127.0.0.1 with TLS from the federation CA: a Flower
SuperLink, three SuperNodes, ``flwr run`` for each job, the demo model (``mlp:16``, one
local epoch, federated evaluation every round, SecAgg+) over the three flood offices'
1,640 rows. The seconds of one round are the time between the first and the last
round's evaluation divided by the rounds between them (a job's start and its first
round, which warm the processes, are not counted).

- ``fl.deploy_round`` ours: datafed's ClientApp with its mods (open, policy, ledger
  record per round and phase, budget) reading the rows from three real ``datafed-node``
  processes over mTLS, under datafed's SuperNode runtime (``nodes/fl/runtime.py``);
  baseline ``flower-plain-deployment``: the same SuperLink, SuperNodes, runtime, model,
  rows (in memory, ``sim-data``) and TLS, the ClientApp without datafed's mods
  (``plain_app``), no datafed node.
- ``fl.deploy_round_runtime`` ours: that plain app under datafed's SuperNode runtime;
  baseline ``flower-supernode``: the plain app under Flower's SuperNode as it comes
  (``flower-supernode``, its SuperExec, one ``flwr-clientapp`` process per message).
  Only ``make bench`` runs it: even two rounds take minutes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sizes import SMOKE, size

from datafed.fl import train
from datafed.fl import training as flower_run
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs
from datafed.fl.progress import Progress
from datafed.fl.settings import RunSettings, fab_pyproject
from datafed.fl.superlink import free_port, start_process, stop_process
from datafed.fl.synthetic import FLOOD_FEATURES, FLOOD_LABEL, FLOOD_TABLE
from datafed.local.federation import LocalFederation
from nodes.fl.local import LocalFlower

NODES = 3
ROUNDS = size(4, 2)
PARAMS = {"nodes": NODES, "rows": 1640, "model": "mlp:16", "local_epochs": 1, "secagg": True}
RUN_CONFIG = {"eval-every": 1, "local-epochs": 1}


class _Rounds:
    """Progress callback: when each round's evaluation arrived."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.evaluated: list[float] = []

    def __call__(self, step: Progress) -> None:
        if step.phase == "evaluate":
            self.evaluated.append(time.monotonic() - self.t0)

    def per_round(self) -> float:
        if len(self.evaluated) < 2:
            raise AssertionError(f"too few rounds evaluated: {self.evaluated}")
        return (self.evaluated[-1] - self.evaluated[0]) / (len(self.evaluated) - 1)


def _plain_supernodes(flower: LocalFlower, stock: bool) -> list[Any]:
    """SuperNodes with simulated partitions (no datafed node), on ``flower``'s SuperLink."""
    ca = str(flower.fed.pki_dir / "ca.crt")
    procs = []
    for i in range(NODES):
        if stock:
            cmd = [str(Path(sys.executable).parent / "flower-supernode")]
        else:
            cmd = [sys.executable, "-m", "nodes.fl.runtime", "supernode"]
        cmd += ["--superlink", flower.superlink_address, "--port", str(free_port())]
        cmd += ["--root-certificates", ca, "--max-wait-time", "300"]
        cmd += ["--node-config", f"partition-id={i} num-partitions={NODES}"]
        log = flower.root / f"plain-supernode-{i}{'-stock' if stock else ''}.log"
        procs.append(start_process(cmd, log, cwd=flower.root))
    return procs


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    federation = LocalFederation.create(
        tmp_path_factory.mktemp("bench-fl-deploy"), flood_node_specs(NODES)
    )
    federation.start()
    try:
        yield federation
    finally:
        federation.stop()


def _ours(fed: LocalFederation) -> float:
    with LocalFlower(fed) as flower:
        flower.start()
        rounds = _Rounds()
        result = train(
            flower.fed_toml,
            purpose=FLOOD_PURPOSE,
            dataset=FLOOD_TABLE,
            features=FLOOD_FEATURES,
            label=FLOOD_LABEL,
            rounds=ROUNDS,
            run_config=RUN_CONFIG,
            on_progress=rounds,
        )
        assert result.status == "completed"
    return rounds.per_round()


def _plain(fed: LocalFederation, stock: bool) -> float:
    flower = LocalFlower(fed)
    flower.root = fed.root / ("flower-stock" if stock else "flower-plain")
    try:
        flower.start_superlink()
        procs = _plain_supernodes(flower, stock)
        settings = RunSettings(
            num_server_rounds=ROUNDS,
            model="mlp:16",
            n_features=6,
            secagg=True,
            min_nodes=NODES,
            datafed=False,
            sim_data="flood:7",
            local_epochs=1,
            eval_every=1,
        )
        link = flower_run.load_fl_federation(flower.write_fed_toml())[1]
        rounds = _Rounds()
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="bench-fl-plain-") as tmp:
            app = Path(tmp) / "app"
            app.mkdir()
            pyproject = fab_pyproject(clientapp="nodes.fl.client_app:plain_app")
            (app / "pyproject.toml").write_text(pyproject, encoding="utf-8")
            cfg = settings.to_run_config()
            ca = fed.pki_dir / "ca.crt"
            cmd, env = flower_run._flwr_run(Path(tmp), app, cfg, link, ca)
            flower_run._run_flwr(cmd, env, 900.0, lambda _l: None, rounds, lines)
        result = flower_run.check_result(flower_run.find_result(lines), "\n".join(lines[-40:]))
        assert result.status == "completed"
        for p in procs:
            stop_process(p)
    finally:
        flower.stop()
    return rounds.per_round()


def _rows(benchmark: Any, bench_row: Any, rows: list[tuple[str, str, str]], run: Any) -> None:
    """Declare ``rows`` (name, role, baseline), run ``run`` once; each row is its per-round s."""
    measures = [bench_row(n, role=r, unit="s", params=PARAMS, baseline_name=b) for n, r, b in rows]
    out: dict[str, float] = {}
    benchmark.pedantic(lambda: out.setdefault("s", run()), rounds=1, iterations=1)
    for m in measures:
        m.value_override = out["s"]


PLAIN = "flower-plain-deployment"
STOCK = "flower-supernode"


def test_deploy_round_ours(benchmark: Any, bench_row: Any, fed: LocalFederation) -> None:
    _rows(benchmark, bench_row, [("fl.deploy_round", "ours", PLAIN)], lambda: _ours(fed))


def test_deploy_round_plain(benchmark: Any, bench_row: Any, fed: LocalFederation) -> None:
    rows = [("fl.deploy_round", "baseline", PLAIN)]
    if not SMOKE:
        rows.append(("fl.deploy_round_runtime", "ours", STOCK))
    _rows(benchmark, bench_row, rows, lambda: _plain(fed, stock=False))


# Flower's own waits (3 s idle pulls, a process per message) make this baseline a minute
# even at its smallest, so the smoke run leaves it out; make bench measures it.
@pytest.mark.skipif(SMOKE, reason="Flower's stock SuperNode: minutes even at two rounds")
def test_deploy_round_stock_flower(benchmark: Any, bench_row: Any, fed: LocalFederation) -> None:
    rows = [("fl.deploy_round_runtime", "baseline", STOCK)]
    _rows(benchmark, bench_row, rows, lambda: _plain(fed, stock=True))
