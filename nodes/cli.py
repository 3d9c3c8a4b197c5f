"""``datafed-node``: the agency operator's command."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from audit.cli.common import command_app, run_main, version_option
from datafed.errors import ConfigError, DatafedError
from nodes.cli_ops import register as register_ops
from nodes.config import load_node_config
from nodes.fl.cli import register as register_fl
from nodes.partners_cli import register as register_partners

if TYPE_CHECKING:
    from nodes.importer.load import ImportResult

__all__ = ["app", "main"]

app = command_app("Run an agency node: serve datasets under policy, record every data use.")
err = Console(stderr=True)
out = Console(soft_wrap=True)
register_fl(app)
register_ops(app)
register_partners(app)
#: Files at least this large (bytes, all together) get a progress bar on import.
LARGE_FILE = 16 * 1024 * 1024


@app.callback()
def _root(show_version: bool = version_option("datafed-node")) -> None:
    """Run an agency node: serve datasets under policy, record every data use."""


@app.command()
def init(
    name: str = typer.Option(..., "--name", help="the node's name (its certificate's CN)"),
    out_file: Path = typer.Option(Path("node.toml"), "--out", "-o", help="file to write"),
    agency: str = typer.Option("", "--agency", help="the agency's human-readable name"),
    pki: Path = typer.Option(Path("pki"), "--pki", help="folder of the node's keys"),
    dataset: str = typer.Option("my_dataset", "--dataset", help="the first dataset's name"),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="the first dataset's file: .duckdb DuckDB, .sqlite SQLite "
        "(default data/<dataset>.duckdb)",
    ),
    peer: list[str] = typer.Option(
        [],
        "--peer",
        help="NAME=HOST:PORT of a peer node that witnesses this node's log and whose log "
        "this node witnesses (repeat; its certificate goes to <pki>/node/NAME.crt)",
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write an annotated node.toml: every key with its default and meaning.

    Secure defaults: the revocation list (tls.crl = <pki>/crl.pem), witnesses for every
    --peer ([witness] and [publish]; none is an explicit choice check-config warns about)
    and DuckDB for the first dataset.
    """
    from datafed.pki.ca import check_name
    from nodes.config.template import node_toml

    check_name("node", name)
    peers = [_peer(p) for p in peer]
    if out_file.exists() and not force:
        raise ConfigError(f"{out_file} exists; pass --force to overwrite it")
    text = node_toml(name, agency=agency, pki_dir=pki, dataset=dataset, path=path, peers=peers)
    out_file.write_text(text, encoding="utf-8")
    load_node_config(out_file)  # what we wrote must validate
    out.print(f"wrote {out_file}: edit the dataset and its policy, then run check-config")
    if not peers:
        err.print(
            "warning: no --peer: nobody will witness this node's log (check-config warns "
            "until [publish] is set)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _peer(text: str) -> tuple[str, str]:
    """``NAME=HOST:PORT`` of ``init --peer``, checked."""
    from datafed.pki.ca import check_name

    name, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host or not port.isdigit():
        raise typer.BadParameter(f"--peer {text!r}: give NAME=HOST:PORT")
    check_name("node", name)
    return name, address


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR"),
    log_format: str = typer.Option(
        "text",
        "--log-format",
        envvar="DATAFED_LOG_FORMAT",
        help="text, or json: one JSON object per line",
    ),
) -> None:
    """Serve the node's datasets over gRPC with mTLS until interrupted."""
    import faulthandler

    from nodes.jsonlog import configure_logging
    from nodes.server import serve as _serve

    # A crash (a signal such as SIGSEGV) writes every thread's stack to stderr, the node's
    # log, instead of leaving only an exit code.
    faulthandler.enable()
    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    configure_logging(log_level, log_format)
    try:
        cfg = load_node_config(config)

        def ready(address: str) -> None:
            print(f"READY node={cfg.node.name} address={address}", flush=True)

        asyncio.run(_serve(cfg, on_ready=ready, config_path=config))
    except DatafedError as exc:
        if log_format != "json":
            raise
        # A log shipper reads every line as JSON: the refusal is a log record too.
        import logging

        from audit.errors import ExitCode

        logging.getLogger("datafed.node").error("serve refused to start: %s", exc)
        raise typer.Exit(getattr(exc, "exit_code", ExitCode.USAGE)) from None


@app.command("collect-worker")
def collect_worker(
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    listen: str = typer.Option(
        "", "--listen", help="also serve uploads on this address (an upload front end)"
    ),
    jobs: bool = typer.Option(True, "--jobs/--no-jobs", help="run aggregation jobs"),
    parent: int = typer.Option(
        0, "--parent", help="stop when this process (the `serve` that started it) is gone"
    ),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Aggregate collection tasks beside `serve`, over the node's PostgreSQL database.

    A Leader's worker claims stored reports into leased jobs and drives them through the
    Helper; a Helper's worker runs the jobs `serve` queued. `--listen` adds an upload
    front end (docs/collect.md).
    """
    import faulthandler

    from nodes.collect.worker import run_worker
    from nodes.jsonlog import configure_logging

    faulthandler.enable()  # as in `serve`: a crash leaves every thread's stack on stderr
    configure_logging(log_level, os.environ.get("DATAFED_LOG_FORMAT", "text"))
    cfg = load_node_config(config)
    if not cfg.collect_service.database:
        raise ConfigError("collect-worker needs [collect_service] database = postgresql://...")
    asyncio.run(run_worker(config, listen=listen, jobs=jobs, parent=parent))


@app.command()
def reload(
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds to wait for the decision"),
) -> None:
    """Make a serving node adopt this file's policies now; print the node's decision.

    The node runs exactly what check-config runs, and only dataset policies and sign-off
    grants may change.  Exit status 0: adopted; 1: refused (the reason is printed); either
    way the decision is in its ledger (operation policy_reload).
    """
    from nodes.config.preflight import warnings
    from nodes.reload import ask_reload
    from nodes.server import pid_file

    cfg = load_node_config(config)
    for line in warnings(cfg):
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    outcome = ask_reload(cfg, pid_file(cfg), timeout)
    if outcome.decision != "approved":
        err.print(
            f"node {cfg.node.name} refused the reload and keeps its policy: {outcome.reason} "
            f"(ledger entry {outcome.index})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    out.print(
        f"node {cfg.node.name} adopted {config} (ledger entry {outcome.index})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("check-config")
def check_config(
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    strict: bool = typer.Option(False, "--strict", help="warnings fail the check too"),
) -> None:
    """Check everything serve would (TLS files, CRL, datasets, policy columns, column types).

    Prints one line per problem and exits with status 1, or a summary of the datasets and
    of the node's shares and deadlines.  What weakens security or audit (no revocation
    list, no witnesses, plaintext ports beyond loopback, ...) is printed as a warning;
    with --strict a warning fails the check (status 1).
    """
    from nodes.config.preflight import preflight, warnings
    from nodes.limits import shares
    from nodes.stores import DataStore

    cfg = load_node_config(config)
    cautions = warnings(cfg)
    for line in cautions:
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    found = preflight(cfg, values=True)
    if strict and cautions and not found:
        err.print(
            f"{len(cautions)} warning(s) in {config} (--strict)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if found:
        for line in found:
            err.print(f"problem: {line}", markup=False, highlight=False, soft_wrap=True)
        err.print(
            f"{len(found)} problem(s) in {config}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    store = DataStore(cfg.datasets, check=False)
    table = Table(title=Text(f"node {cfg.node.name} ({cfg.node.agency})"))
    for col in ("dataset", "engine", "columns", "requesters", "purposes", "protections", "k"):
        table.add_column(col)
    for ds in cfg.datasets:
        p = ds.policy
        types = store.column_types(ds.name)
        cells = [
            ds.name,
            store.engine(ds.name),
            ", ".join(f"{c}:{t}" for c, t in types.items()),
            ", ".join(p.allowed_requesters) or "(nobody)",
            ", ".join(p.allowed_purposes) or "(none)",
            ", ".join(p.allowed_protections),
            str(p.min_group_size),
        ]
        table.add_row(*(Text(c) for c in cells))
    store.close()
    out.print(table)
    out.print(shares(cfg), markup=False, highlight=False)  # docs/policy.md#limits


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(..., help="CSV (.csv, .csv.gz, .tsv) or Parquet files"),
    config: Path = typer.Option(..., "--config", "-c", help="node.toml"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="the dataset to load into"),
    replace: bool = typer.Option(False, "--replace", help="replace the table if it exists"),
    append: bool = typer.Option(False, "--append", help="append to the existing table"),
    na: list[str] = typer.Option(
        [],
        "--na",
        help="CSV text meaning a missing value, besides the dataset's import_na "
        "(repeat: --na n/a --na NA)",
    ),
    skip_headers: bool = typer.Option(
        True,
        "--skip-headers/--keep-headers",
        help="drop CSV lines that repeat the header (concatenated exports)",
    ),
) -> None:
    """Load CSV or Parquet files into a dataset's embedded store (DuckDB or SQLite), typed.

    Column types come from node.toml (types) or are detected, and the decision is shown
    per column; missing-value tokens (--na, import_na) become NULL; a row that does not
    fit is refused with its line and nothing is written.  Recorded in the node's ledger.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from nodes.importer.load import Mode, import_files

    if replace and append:
        raise typer.BadParameter("give at most one of --replace and --append")
    cfg = load_node_config(config)
    size = sum(f.stat().st_size for f in files if f.is_file())
    bar = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        console=err,
        transient=True,
        disable=size < LARGE_FILE,
    )
    tasks: dict[str, TaskID] = {}

    def progress(label: str, fraction: float) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=1.0)
        bar.update(tasks[label], completed=fraction)

    mode: Mode = "replace" if replace else "append" if append else "create"
    with bar:
        result = import_files(
            cfg, dataset, files, mode=mode, progress=progress, na=na, skip_headers=skip_headers
        )
    _print_import(result)


def _print_import(result: ImportResult) -> None:
    """Each column's type, missing values and why; then the one-line summary."""
    table = Table(title=Text(f"columns of {result.dataset}"))
    for col in ("column", "type", "missing", "why"):
        table.add_column(col)
    for c, t in result.types.items():
        table.add_row(Text(c), Text(t), str(result.missing.get(c, 0)), Text(result.decisions[c]))
    out.print(table)
    if result.skipped_headers:
        out.print(f"skipped {result.skipped_headers} line(s) repeating the header", markup=False)
    types = ", ".join(f"{c}:{t}" for c, t in result.types.items())
    entries = ", ".join(f"#{i}" for i in result.ledger_indexes)
    out.print(
        f"imported {result.rows} row(s) into dataset {result.dataset!r} "
        f"({result.engine}: {result.path}); columns {types}; ledger {entries}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    run_main(app, (DatafedError, OSError))
