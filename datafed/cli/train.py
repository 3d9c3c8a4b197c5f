"""``datafed train``, ``simulate``, ``lineage`` and ``superlink``: federated learning commands.

Registered on the main ``datafed`` app by :func:`register`. ``train`` runs datafed's Flower
app (or ``--app DIR``) on a SuperLink -- the one in ``fed.toml`` or ``--superlink``, or one
it starts for the job (``--start-superlink``) -- with ``flwr run``'s ``--run-config``
convention and a line per round; ``simulate`` runs the same apps in Flower's simulation
engine for many synthetic agencies; ``lineage`` traces a model's digest through node
ledger exports (``datafed-audit export``); ``superlink`` runs a standing SuperLink for the
federation. See docs/training.md. Help texts escape an opening bracket (rich markup).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from datafed.cli.progress import live_steps
from datafed.client.progress import Step

if TYPE_CHECKING:
    from datafed.fl import DpParams
    from datafed.fl.progress import Progress
    from datafed.fl.result import TrainResult
    from datafed.fl.settings import ConfigValue

__all__ = ["lineage", "register", "simulate", "superlink", "train"]

#: datafed.fl.settings.DEFAULT_CLIENTAPP, spelled out so that ``datafed --help`` does not
#: load the FL package (numpy); tests/unit/fl/test_cli.py checks they agree.
DEFAULT_CLIENTAPP = "nodes.fl.client_app:app"

out = Console(soft_wrap=True, markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)


def _print_result(result: TrainResult, as_json: bool) -> None:
    if as_json:
        data = result.to_json()
        data.pop("weights_npz", None)
        print(json.dumps(data, sort_keys=True))
        return
    out.print(f"job {result.job_id}: {result.status}")
    for node, rows in sorted(result.nodes.items()):
        # a DP node's open reply carries no row count (nodes/release/training.py)
        out.print(f"  node {node}: " + (f"{rows} rows approved" if rows else "approved (DP)"))
    for r in result.rounds:
        acc = r.eval_metrics.get("accuracy")
        extra = f", federated accuracy {acc:.3f}" if acc is not None else ""
        dropped = f", {len(r.failures)} dropped" if r.failures else ""
        out.print(
            f"  round {r.round}: {len(r.participants)} node(s) "
            f"({', '.join(r.participants)}){dropped}{extra}"
        )
    out.print(f"  model {result.model_sha256} (its lineage key)")
    out.print(
        "  trace it: datafed-audit export ..., then datafed-audit lineage MODEL EXPORT_DIR... "
        "-p POLICY (MODEL: this key, or datafed model-digest FILE of a saved model)"
    )


def _save(result: TrainResult, path: Path) -> None:
    """Write the weights as .npz keyed by the model's parameter names (its state_dict)."""
    import numpy as np

    from datafed.fl.model import build_model

    settings = result.settings
    net = build_model(int(settings.get("n-features", 1)), str(settings.get("model", "mlp:16")))
    names = list(net.state_dict().keys())
    if len(names) != len(result.weights):
        names = [f"param_{i}" for i in range(len(result.weights))]
    arrays = dict(zip(names, result.weights, strict=True))
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool


def train(
    federation: Path = typer.Option(
        ..., "--federation", "-f", help="fed.toml (its \\[flower] table names the SuperLink)"
    ),
    purpose: str = typer.Option(..., "--purpose", help="declared purpose, checked by every node"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="federated rounds"),
    superlink: str = typer.Option(
        None, "--superlink", help="join (or with --start-superlink, run) this SuperLink host:port"
    ),
    start_superlink: bool = typer.Option(
        False, "--start-superlink", help="run the SuperLink for this job, then stop it"
    ),
    run_config: list[str] = typer.Option(
        [], "--run-config", help="key=value, as in flwr run: lr, local-epochs, batch-size, ..."
    ),
    model: str = typer.Option(
        "mlp:16", "--model", help="mlp:WIDTHS or package.module:factory (a torch.nn.Module)"
    ),
    dataset: str = typer.Option(..., "--dataset", help="dataset at every node"),
    features: str = typer.Option(
        ..., "--features", help="comma-separated feature column names (numeric)"
    ),
    label: str = typer.Option(..., "--label", help="binary label column name (0/1)"),
    app: Path = typer.Option(None, "--app", help="a Flower App directory (default: datafed's)"),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedadam, ... or mod:fn"),
    secagg: bool = typer.Option(True, "--secagg/--no-secagg", help="Flower SecAgg+ (default on)"),
    dp_epsilon: float = typer.Option(0.0, "--dp-epsilon", help="local DP epsilon per round"),
    dp_delta: float = typer.Option(1e-5, "--dp-delta"),
    dp_clip: float = typer.Option(1.0, "--dp-clip", help="L2 clipping norm of each update"),
    legal_basis: str = typer.Option("", "--legal-basis"),
    save_model: Path = typer.Option(None, "--save-model", help="write the weights (.npz)"),
    log_file: Path = typer.Option(None, "--log", help="write the whole Flower run log here"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train one model across the federation's agencies; no row leaves any agency.

    Every node's published policy is checked first (dataset, purpose, columns, DP,
    budget): a refusal comes before any Flower run starts (exit 3).
    """
    from datafed.fl.training import train as run_train

    extra, dp = _run_options(run_config, dp_epsilon, dp_delta, dp_clip)
    with live_steps(err, quiet=quiet, keep=1) as steps:
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
            run_config=extra,
            superlink=superlink,
            start_superlink=start_superlink,
            progress=(lambda _line: None) if quiet else _flower_line,
            on_progress=None if steps is None else _round_lines(steps),
            log_path=log_file,
        )
    _output(result, save_model, as_json)


def _output(result: TrainResult, save_model: Path | None, as_json: bool) -> None:
    """Write the weights if ``--save-model`` asks for them, then print the result."""
    if save_model is not None:
        _save(result, save_model)
        if model_key(save_model) != result.model_sha256:  # the file must name the model
            from datafed.errors import ProtocolError

            raise ProtocolError(f"{save_model} does not hash to the model's lineage key")
        err.print(f"saved the model to {save_model} (datafed model-digest {save_model} prints "
                  "its lineage key)")  # fmt: skip
    _print_result(result, as_json)


def _run_options(
    run_config: list[str], dp_epsilon: float, dp_delta: float, dp_clip: float
) -> tuple[dict[str, ConfigValue], DpParams | None]:
    """The ``--run-config`` pairs and the local DP parameters (none unless epsilon > 0)."""
    from datafed.errors import ConfigError
    from datafed.fl import DpParams
    from datafed.fl.settings import parse_run_config

    try:
        extra = parse_run_config(run_config)
        dp = DpParams.local(dp_epsilon, dp_delta, dp_clip) if dp_epsilon > 0 else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return extra, dp


def _round_lines(steps: Callable[[Step], None]) -> Callable[[Progress], None]:
    """Each training step as a printed line and on each node's live line."""

    def show(p: Progress) -> None:
        err.print("  " + p.describe())
        for step in training_steps(p):
            steps(step)

    return show


def training_steps(p: Progress) -> list[Step]:
    """The live-line steps of one training progress report: one per node it names."""
    if p.phase == "open":
        name = "approved"
    else:
        verb = "trained" if p.phase == "fit" else "evaluated"
        name = f"round {p.round}/{p.rounds} {verb}"
    return [Step(node, name, "done") for node in p.nodes]


def _flower_line(line: str) -> None:
    # Flower's own noteworthy lines (where the run is, errors); the rest is in --log.
    if "Successfully started run" in line or "SuperLink started" in line or "ERROR" in line:
        err.print("  " + line.strip())


def simulate(
    agencies: int = typer.Option(20, "--agencies", min=2, help="simulated agencies"),
    rounds: int = typer.Option(3, "--rounds", min=1),
    seed: int = typer.Option(7, "--seed"),
    secagg: bool = typer.Option(True, "--secagg/--no-secagg"),
    clientapp: str = typer.Option(
        DEFAULT_CLIENTAPP, "--clientapp", help="the agencies' ClientApp (module:attr)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run the same Flower apps in Flower's simulation engine over synthetic agencies."""
    from datafed.fl.simulation import simulate as run_simulate

    err.print(f"simulating {agencies} agencies ({rounds} rounds)...")
    result = run_simulate(agencies, rounds=rounds, seed=seed, secagg=secagg, client_app=clientapp)
    _print_result(result, as_json)


LINEAGE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def lineage(ctx: typer.Context) -> None:
    """Same as datafed-audit lineage (verifies every export against the pinned policy first).

    datafed lineage MODEL EXPORT_DIR... -p POLICY: MODEL is the model's lineage key
    (printed by datafed train) or its saved .npz file. See datafed-audit lineage --help.
    """
    from audit.cli import main as audit_main

    args = list(ctx.args)
    if args and not args[0].startswith("-") and Path(args[0]).is_file():
        args[0] = model_key(Path(args[0]))
    saved, sys.argv = sys.argv, ["datafed-audit", "lineage", *args]
    try:
        audit_main()
    finally:
        sys.argv = saved


def model_key(path: Path) -> str:
    """The lineage key of a saved model file: the digest the nodes' ledgers record."""
    from datafed.fl.digest import file_digest

    return file_digest(path)


def model_digest(
    path: Path = typer.Argument(..., help="a model saved by datafed train --save-model (.npz)"),
) -> None:
    """Print a saved model's lineage key (the digest the nodes' ledgers record for it)."""
    out.print(model_key(path))


def superlink(
    listen: str = typer.Option("0.0.0.0:9093", "--listen", help="host:port to serve on"),
    cert: Path = typer.Option(..., "--cert", help="its certificate (role superlink)"),
    key: Path = typer.Option(..., "--key", help="its TLS key"),
    ca: Path = typer.Option(..., "--ca", help="the federation CA certificate"),
    database: Path = typer.Option(None, "--database", help="keep its state in this file"),
) -> None:
    """Run the federation's Flower SuperLink with TLS (replaces this process)."""
    from datafed.errors import PkiError
    from datafed.fl.superlink import child_env, split_address, superlink_command
    from datafed.pki.ca import identity_from_pem

    try:
        identity = identity_from_pem(cert.read_bytes())
    except FileNotFoundError as exc:
        raise PkiError(f"--cert: file not found: {cert}") from exc
    if identity.role != "superlink":
        raise PkiError(f"--cert is for {identity}, not a superlink: datafed pki request NAME "
                       "--role superlink")  # fmt: skip
    host, port = split_address(listen)
    cmd = superlink_command(
        host=host, port=port, certfile=cert, keyfile=key, ca_certfile=ca, database=database
    )
    err.print(f"starting the SuperLink {identity.name} on {listen} (TLS)")
    sys.stdout.flush()
    os.execve(cmd[0], cmd, child_env())


def register(app: typer.Typer) -> None:
    """Add ``train``, ``simulate``, ``lineage`` and ``superlink`` to the ``datafed`` app.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.command("train")(train)
    app.command("simulate")(simulate)
    app.command("lineage", context_settings=LINEAGE_CONTEXT, add_help_option=False)(lineage)
    app.command("model-digest")(model_digest)
    app.command("superlink")(superlink)
