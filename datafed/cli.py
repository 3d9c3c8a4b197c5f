"""``datafed``: the analyst's command (queries, node info) and the federation CA (``pki``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audit.cli_common import version_option
from audit.errors import EXIT_CODES_HELP, ExitCode
from datafed.cli_collect import register as register_collect
from datafed.cli_pki import register as register_pki
from datafed.cli_psi import register as register_psi
from datafed.cli_train import register as register_train
from datafed.errors import DatafedError
from datafed.modes import describe_modes

__all__ = ["app", "main"]

app = typer.Typer(
    help="datafed analyst client: protected queries across agency nodes.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_pki(app)
register_psi(app)
register_train(app)
register_collect(app)
out = Console(soft_wrap=True)
err = Console(stderr=True)

FED_OPTION = typer.Option(..., "--federation", "-f", help="federation file (fed.toml)")
#: Generated from the registry of protection modes (datafed.modes.MODES).
PROTECTION_HELP = "protection mode (default paillier). " + describe_modes()


@app.callback()
def _root(show_version: bool = version_option("datafed")) -> None:
    """Datafed analyst client: protected queries across agency nodes."""


@app.command()
def query(
    sql: str = typer.Argument(
        ..., help="SELECT aggregates FROM dataset [WHERE ...] [GROUP BY ...]"
    ),
    federation: Path = FED_OPTION,
    purpose: str = typer.Option(..., "--purpose", help="declared purpose, checked by every node"),
    protection: str = typer.Option("paillier", "--protection", help=PROTECTION_HELP),
    legal_basis: str = typer.Option("", "--legal-basis", help="legal basis recorded in ledgers"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run one protected query across every node of the federation."""
    from datafed.client import Federation

    fed = Federation.from_file(federation)
    with err.status(f"querying {len(fed.config.nodes)} node(s) with protection {protection}..."):
        result = fed.query(sql, purpose=purpose, protection=protection, legal_basis=legal_basis)
    if as_json:
        payload = {
            "columns": list(result.columns),
            "rows": [list(r) for r in result.rows],
            "protection": result.protection,
            "job_id": result.job_id,
            "ledgers": [
                {
                    "node": h.node,
                    "size": h.size,
                    "root_hash": h.root_hash.hex(),
                    "entries": list(h.entry_indexes),
                }
                for h in result.ledgers
            ],
        }
        print(json.dumps(payload))
        return
    table = Table(
        title=f"{result.protection} query over {', '.join(result.nodes)} (job {result.job_id})"
    )
    for col in result.columns:
        table.add_column(col, justify="right")
    for row in result.rows:
        table.add_row(
            *(
                ""
                if v is None
                else f"{v:,.4f}".rstrip("0").rstrip(".")
                if isinstance(v, float)
                else str(v)
                for v in row
            )
        )
    out.print(table)
    for h in result.ledgers:
        root = h.root_hash.hex()[:16]
        out.print(
            f"  ledger {h.node}: size {h.size}, root {root}…, entries {list(h.entry_indexes)}"
        )
    if result.receipts:
        out.print(
            f"  receipts verified: {len(result.receipts)} node(s) proved the approved and "
            f"released entries of job {result.job_id} under their signed checkpoints"
        )
    if result.error_bound is not None:
        out.print(f"  approximate (ckks): every SUM and COUNT within ±{result.error_bound:.3g}")
    if result.noise_stddev:
        noise = ", ".join(f"{k} ±{v:.3g} (1σ)" for k, v in result.noise_stddev.items())
        out.print(f"  differential privacy: epsilon {result.epsilon}, noise {noise}")


@app.command()
def nodes(federation: Path = FED_OPTION) -> None:
    """Show every node's datasets and ledger head."""
    from datafed.client import Federation

    infos = Federation.from_file(federation).node_info()
    table = Table(title="federation nodes")
    for col in ("node", "agency", "datasets", "ledger size", "ledger root"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.node,
            i.agency,
            ", ".join(i.datasets),
            str(i.ledger.size),
            i.ledger.root_hash.hex()[:16] + "…",
        )
    out.print(table)


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    try:
        app()
    except (DatafedError, OSError) as exc:  # escape: messages print literally ("[a-z0-9]")
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", ExitCode.USAGE))
