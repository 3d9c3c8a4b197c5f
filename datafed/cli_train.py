"""``datafed train``, ``datafed simulate`` and ``datafed lineage``: federated learning commands.

Registered on the main ``datafed`` app by :func:`register`. ``train`` runs datafed's Flower
app (or ``--app DIR``) on the SuperLink named in ``fed.toml``; ``simulate`` runs it in
Flower's simulation engine for many synthetic agencies; ``lineage`` traces a model's
digest through node ledger exports (``datafed-audit export``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from datafed.fl.result import TrainResult

__all__ = ["lineage", "register", "simulate", "train"]

out = Console(soft_wrap=True)
err = Console(stderr=True)


def _print_result(result: TrainResult, as_json: bool) -> None:
    if as_json:
        data = result.to_json()
        data.pop("weights_npz", None)
        print(json.dumps(data, sort_keys=True))
        return
    out.print(f"job {result.job_id}: {result.status}")
    for node, rows in sorted(result.nodes.items()):
        out.print(f"  node {node}: {rows} rows approved")
    for r in result.rounds:
        acc = r.eval_metrics.get("accuracy")
        extra = f", federated accuracy {acc:.3f}" if acc is not None else ""
        dropped = f", {len(r.failures)} dropped" if r.failures else ""
        out.print(
            f"  round {r.round}: {len(r.participants)} node(s) "
            f"({', '.join(r.participants)}){dropped}{extra}"
        )
    out.print(f"  model {result.model_sha256}")
    out.print("  trace it: datafed-audit export ... then datafed lineage MODEL EXPORT_DIR...")


def train(
    federation: Path = typer.Option(..., "--federation", "-f", help="fed.toml with [flower]"),
    purpose: str = typer.Option(..., "--purpose", help="declared purpose, checked by every node"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="federated rounds"),
    app: Path = typer.Option(None, "--app", help="a Flower App directory (default: datafed's)"),
    dataset: str = typer.Option("flood_readings", "--dataset"),
    features: str = typer.Option(
        "rain_1h_cm,rain_24h_cm,river_level_m,tide_m,drain_blockage,elevation_m",
        "--features",
        help="comma-separated feature columns",
    ),
    label: str = typer.Option("flooded", "--label", help="binary label column"),
    model: str = typer.Option("mlp:16", "--model"),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedadam, ... or mod:fn"),
    secagg: bool = typer.Option(True, "--secagg/--no-secagg", help="Flower SecAgg+ (default on)"),
    dp_epsilon: float = typer.Option(0.0, "--dp-epsilon", help="local DP epsilon per round"),
    dp_delta: float = typer.Option(1e-5, "--dp-delta"),
    dp_clip: float = typer.Option(1.0, "--dp-clip", help="L2 clipping norm of each update"),
    legal_basis: str = typer.Option("", "--legal-basis"),
    save_model: Path = typer.Option(None, "--save-model", help="write the weights (.npz)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train one model across the federation's agencies; no row leaves any agency."""
    import numpy as np

    from datafed.fl import DpParams
    from datafed.fl.training import train as run_train

    dp = DpParams.local(dp_epsilon, dp_delta, dp_clip) if dp_epsilon > 0 else None
    with err.status(f"training across the federation ({rounds} rounds)..."):
        result = run_train(
            federation,
            purpose=purpose,
            rounds=rounds,
            app=app,
            dataset=dataset,
            features=[f.strip() for f in features.split(",") if f.strip()],
            label=label,
            model=model,
            dp=dp,
            secagg=secagg,
            strategy=strategy,
            legal_basis=legal_basis,
        )
    if save_model is not None:
        np.savez(save_model, *result.weights)
    _print_result(result, as_json)


def simulate(
    agencies: int = typer.Option(20, "--agencies", min=2, help="simulated agencies"),
    rounds: int = typer.Option(3, "--rounds", min=1),
    seed: int = typer.Option(7, "--seed"),
    secagg: bool = typer.Option(True, "--secagg/--no-secagg"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run the same Flower apps in Flower's simulation engine over synthetic agencies."""
    from datafed.fl.training import simulate as run_simulate

    with err.status(f"simulating {agencies} agencies ({rounds} rounds)..."):
        result = run_simulate(agencies, rounds=rounds, seed=seed, secagg=secagg)
    _print_result(result, as_json)


def lineage(
    model_sha256: str = typer.Argument(..., help="the model's digest (from the training result)"),
    exports: list[Path] = typer.Argument(..., help="ledger export directories of the nodes"),
) -> None:
    """Trace a model through the nodes' ledgers: job, rounds, participants, decisions."""
    from audit.export import ExportDir
    from audit.records import decode_leaf
    from datafed.fl.lineage import format_lineage, model_lineage

    logs = {}
    for path in exports:
        exp = ExportDir(path)
        recs = [decode_leaf(leaf)[1] for chunk in exp.leaf_chunks(4096) for leaf in chunk]
        logs[recs[0].node if recs else path.name] = recs
    found = model_lineage(model_sha256.strip().lower(), logs)
    out.print(format_lineage(found))
    if not found.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``simulate`` and ``lineage`` to the ``datafed`` app.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.command("train")(train)
    app.command("simulate")(simulate)
    app.command("lineage")(lineage)
