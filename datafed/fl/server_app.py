"""The analyst's Flower ServerApp: ``datafed.fl.server_app:app``.

Runs at the SuperLink (deployment) or in the simulation engine. It never sees raw data
and, with SecAgg+ on (the default), never sees a single node's update either: only the
sum. It builds the initial model (the model factory runs here first, so a broken one
fails before any node is asked), opens the job at every node (each node checks the
analyst's signed request), runs the rounds with a progress line per step
(:mod:`datafed.fl.progress`), and prints the result line the analyst's ``train()`` reads.

Whatever goes wrong in here becomes a ``failed`` result naming the exception and where it
was raised (with the full traceback in the run's log), so the analyst sees the cause
instead of Flower's bare "An unhandled exception occurred in the ServerApp".
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy.typing as npt
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.serverapp import Grid, ServerApp

from datafed.fl.digest import arrays_digest
from datafed.fl.errors import TrainingFailed
from datafed.fl.progress import Progress
from datafed.fl.result import RoundSummary, TrainResult
from datafed.fl.serde import bundle_from_text
from datafed.fl.settings import RunSettings
from datafed.fl.strategies import make_strategy
from datafed.fl.strategy import ApprovedClientManager, AuditedStrategy
from datafed.fl.waits import shorten_pull_backoff
from datafed.fl.workflow import OpenOutcome, PromptGrid, build_workflow, open_job, wait_for_nodes

__all__ = ["app", "describe_failure", "run_job"]

log = logging.getLogger("datafed.fl")
#: How long to wait for the job's SuperNodes to connect before giving up.
CONNECT_TIMEOUT_S = 300.0

app = ServerApp()


def _public_settings(settings: RunSettings) -> dict[str, object]:
    cfg: dict[str, object] = dict(settings.to_run_config())
    cfg.pop("bundle", None)
    return cfg


def _job_id(settings: RunSettings, run_id: int) -> str:
    try:
        return bundle_from_text(settings.bundle).job_id if settings.bundle else f"run-{run_id}"
    except Exception:  # a malformed bundle is reported by the failure itself
        return f"run-{run_id}"


def _emit(progress: Progress) -> None:
    print(progress.to_line(), flush=True)


def describe_failure(exc: BaseException) -> str:
    """``Type: message (at file:line)`` of an exception and, if chained, of its first cause."""

    def one(e: BaseException) -> str:
        frames = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        return f"{type(e).__name__}: {e}{where}"

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    return one(exc) if root is exc else f"{one(exc)}; caused by {one(root)}"


def run_job(
    grid: Grid,
    context: Context,
    settings: RunSettings,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Build the model, open the job at every node, train; return the result (no printing).

    Raises
    ------
    TrainingFailed
        If too few nodes connect or approve.
    Exception
        Whatever the model or strategy factory raises (:func:`main` reports it).
    """
    from datafed.fl.model import initial_weights  # torch, only where training happens

    init = initial_weights(settings.n_features, settings.model, settings.seed)
    job_id, expected = f"run-{context.run_id}", settings.min_nodes
    if settings.datafed and settings.bundle:
        bundle = bundle_from_text(settings.bundle)
        job_id, expected = bundle.job_id, max(expected, len(bundle.requests))
    node_ids = wait_for_nodes(grid, expected, CONNECT_TIMEOUT_S)
    names: dict[int, str] = {}
    rows: dict[str, int] = {}
    if settings.datafed:
        names_in_job = set(bundle_from_text(settings.bundle).requests) if settings.bundle else None
        opened = _open(grid, node_ids, job_id, settings, on_progress, names_in_job)
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
    audited = _train(grid, context, settings, init, names, approved, on_progress)
    weights = audited.final_arrays or init
    rounds, error = _rounds(audited)
    return TrainResult(
        job_id=job_id,
        status="failed" if error else "completed",
        error=error,
        model_sha256=arrays_digest(weights),
        weights=[w.astype("float32") for w in weights],
        rounds=rounds,
        nodes=rows,
        settings=_public_settings(settings),
        run_id=str(context.run_id),
    )


def _open(
    grid: Grid,
    node_ids: list[int],
    job_id: str,
    settings: RunSettings,
    on_progress: Callable[[Progress], None] | None,
    expected: set[str] | None = None,
) -> OpenOutcome:
    """Open the job at every node; report who approved and how many refused."""
    opened = open_job(grid, node_ids, job_id, settings.stage_timeout or None, expected)
    if on_progress is not None:
        on_progress(
            Progress(
                "open",
                0,
                settings.num_server_rounds,
                tuple(sorted(opened.approved.values())),
                len(opened.refusals),
            )
        )
    return opened


def _train(
    grid: Grid,
    context: Context,
    settings: RunSettings,
    init: list[npt.NDArray[Any]],
    names: dict[int, str],
    approved: set[int],
    on_progress: Callable[[Progress], None] | None,
) -> AuditedStrategy:
    """Run the rounds on the approved nodes; the audited strategy holds what happened."""
    min_clients = min(len(approved), 2 if settings.secagg else 1)
    inner = make_strategy(settings.strategy, ndarrays_to_parameters(init), min_clients)
    audited = AuditedStrategy(
        inner, names, settings.num_server_rounds, settings.eval_every, on_progress
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_server_rounds),
        strategy=audited,
        client_manager=ApprovedClientManager(approved),
    )
    build_workflow(settings)(grid, legacy)
    return audited


def _rounds(audited: AuditedStrategy) -> tuple[tuple[RoundSummary, ...], str]:
    """Each round's summary, and why the job failed if a round produced no aggregate."""
    rounds = tuple(RoundSummary.from_json(r.to_json()) for _, r in sorted(audited.rounds.items()))
    lost = [r for r in rounds if not r.model_out]
    if not lost:
        return rounds, ""
    why = next((f for r in lost for f in r.failures), "no node's update arrived")
    return rounds, f"round(s) {', '.join(str(r.round) for r in lost)} produced no aggregate: {why}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: run the job and print the result line for the analyst.

    Every failure -- a broken model or strategy factory, a bad run config, too few
    nodes -- ends as a ``failed`` result naming its cause; the traceback goes to the log.
    """
    settings = RunSettings()
    shorten_pull_backoff()  # replies are pulled 20 ms after they are due, not a second
    try:
        settings = RunSettings.from_run_config(context.run_config)
        result = run_job(PromptGrid(grid), context, settings, _emit)
    except TrainingFailed as exc:
        result = TrainResult(
            _job_id(settings, context.run_id),
            "failed",
            error=str(exc),
            settings=_public_settings(settings),
        )
    except Exception as exc:  # anything else: say what and where, instead of Flower's exit 201
        traceback.print_exc(file=sys.stderr)
        log.error("ServerApp failed: %s", describe_failure(exc))
        result = TrainResult(
            _job_id(settings, context.run_id),
            "failed",
            error=f"the ServerApp failed: {describe_failure(exc)}",
            settings=_public_settings(settings),
        )
    line = result.to_line()
    if settings.result_path:
        Path(settings.result_path).write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
