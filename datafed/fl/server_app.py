"""The analyst's Flower ServerApp: ``datafed.fl.server_app:app``.

Runs at the SuperLink (deployment) or in the simulation engine. It never sees raw data
and, with SecAgg+ on (the default), never sees a single node's update either: only the
sum. It opens the job at every node (each node checks the analyst's signed request),
runs the rounds, and prints the result line the analyst's ``train()`` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.serverapp import Grid, ServerApp

from datafed.fl.digest import arrays_digest
from datafed.fl.errors import TrainingFailed
from datafed.fl.result import RoundSummary, TrainResult
from datafed.fl.serde import bundle_from_text
from datafed.fl.settings import RunSettings
from datafed.fl.strategies import make_strategy
from datafed.fl.strategy import ApprovedClientManager, AuditedStrategy
from datafed.fl.workflow import PromptGrid, build_workflow, open_job, wait_for_nodes

__all__ = ["app", "run_job"]

log = logging.getLogger("datafed.fl")
#: How long to wait for the job's SuperNodes to connect before giving up.
CONNECT_TIMEOUT_S = 300.0

app = ServerApp()


def _public_settings(settings: RunSettings) -> dict[str, object]:
    cfg: dict[str, object] = dict(settings.to_run_config())
    cfg.pop("bundle", None)
    return cfg


def run_job(grid: Grid, context: Context, settings: RunSettings) -> TrainResult:
    """Open the job at every node, train, and return the result (no printing)."""
    job_id, expected = f"run-{context.run_id}", settings.min_nodes
    if settings.datafed and settings.bundle:
        bundle = bundle_from_text(settings.bundle)
        job_id, expected = bundle.job_id, max(expected, len(bundle.requests))
    node_ids = wait_for_nodes(grid, expected, CONNECT_TIMEOUT_S)
    timeout = settings.stage_timeout or None
    names: dict[int, str] = {}
    rows: dict[str, int] = {}
    if settings.datafed:
        opened = open_job(grid, node_ids, job_id, timeout)
        if opened.refusals:
            return TrainResult(
                job_id, "refused", refusals=opened.refusals, settings=_public_settings(settings)
            )
        if len(opened.approved) < expected:
            raise TrainingFailed(
                f"only {len(opened.approved)} of {expected} nodes approved job {job_id!r}"
            )
        names, rows = opened.approved, opened.rows
        approved = set(opened.approved)
    else:
        approved = set(node_ids)
    from datafed.fl.model import initial_weights  # torch, only where training happens

    init = initial_weights(settings.n_features, settings.model, settings.seed)
    min_clients = min(len(approved), 2 if settings.secagg else 1)
    inner = make_strategy(settings.strategy, ndarrays_to_parameters(init), min_clients)
    audited = AuditedStrategy(inner, names, settings.num_server_rounds, settings.eval_every)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_server_rounds),
        strategy=audited,
        client_manager=ApprovedClientManager(approved),
    )
    build_workflow(settings)(grid, legacy)
    weights = audited.final_arrays or init
    rounds = tuple(RoundSummary.from_json(r.to_json()) for _, r in sorted(audited.rounds.items()))
    lost = [r.round for r in rounds if not r.model_out]
    return TrainResult(
        job_id=job_id,
        status="failed" if lost else "completed",
        error=f"round(s) {', '.join(map(str, lost))} produced no aggregate" if lost else "",
        model_sha256=arrays_digest(weights),
        weights=[w.astype("float32") for w in weights],
        rounds=rounds,
        nodes=rows,
        settings=_public_settings(settings),
        run_id=str(context.run_id),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: run the job and print the result line for the analyst."""
    settings = RunSettings.from_run_config(context.run_config)
    try:
        result = run_job(PromptGrid(grid), context, settings)
    except TrainingFailed as exc:
        result = TrainResult(
            f"run-{context.run_id}", "failed", error=str(exc), settings=_public_settings(settings)
        )
    line = result.to_line()
    if settings.result_path:
        Path(settings.result_path).write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
