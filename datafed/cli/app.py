"""``datafed``: the analyst's command (queries, node info) and the federation CA (``pki``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from audit.cli.common import command_app, run_main, version_option
from audit.errors import ExitCode
from datafed.cli.collect import register as register_collect
from datafed.cli.init import register as register_init
from datafed.cli.numbers import cell, precision_step
from datafed.cli.pki import register as register_pki
from datafed.cli.progress import live_steps
from datafed.cli.psi import register as register_psi
from datafed.cli.train import register as register_train
from datafed.client.nodeinfo import DatasetAccess, NodeStatus
from datafed.errors import DatafedError
from datafed.modes import describe_modes

if TYPE_CHECKING:
    from datafed.query.result import QueryResult

__all__ = ["app", "main"]

app = command_app("datafed analyst client: protected queries across agency nodes.")
register_init(app)
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


QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr")


WIDE_OPTION = typer.Option(
    False, "--wide", help="never wrap the table (it is never cut when not on a terminal)"
)


@app.command()
def query(
    sql: str = typer.Argument(
        ...,
        help="the query, in the SQL subset of docs/analyst.md",
    ),
    federation: Path = FED_OPTION,
    purpose: str = typer.Option(..., "--purpose", help="declared purpose, checked by every node"),
    protection: str = typer.Option("paillier", "--protection", help=PROTECTION_HELP),
    legal_basis: str = typer.Option("", "--legal-basis", help="legal basis recorded in ledgers"),
    as_json: bool = typer.Option(
        False, "--json", help="print the result as JSON (docs/analyst.md)"
    ),
    quiet: bool = QUIET_OPTION,
    wide: bool = WIDE_OPTION,
) -> None:
    """Run one protected query across every node of the federation.

    SQL: SELECT group columns and SUM, COUNT, AVG, VAR, MIN, MAX, HISTOGRAM of a column
    FROM one dataset, with WHERE, GROUP BY, HAVING, ORDER BY and LIMIT (docs/analyst.md).
    A live line per node shows each step on stderr unless --quiet.
    """
    from datafed.client import Federation

    fed = Federation.from_file(federation)
    try:
        with live_steps(err, quiet=quiet) as progress:
            result = fed.query(
                sql, purpose=purpose, protection=protection, legal_basis=legal_basis,
                progress=progress,
            )  # fmt: skip
    except KeyboardInterrupt:  # the client has cancelled the job at its nodes meanwhile
        err.print("interrupted: the job was cancelled at the nodes that held it open")
        raise typer.Exit(130) from None
    if as_json:
        print(result.to_json())
        return
    _print_table(result, wide)
    _print_notes(result)


def _print_table(result: QueryResult, wide: bool = False) -> None:
    """The result's rows as a table, each row's marks in a note column, what they mean.

    Numbers in one format (:mod:`datafed.cli.numbers`: separators, noisy values rounded to
    their noise). Nothing is ever cut: on a terminal long cells wrap (``--wide``: the
    table keeps its width), elsewhere (a file, a pipe) the table is as wide as it needs.
    """
    suppressed, remainder = result.flags()
    notes = [
        ", ".join(m for m, on in (("suppressed", s), ("remainder", r)) if on)
        for s, r in zip(suppressed, remainder, strict=True)
    ]
    table = Table(
        title=Text(
            f"{result.protection} query over {', '.join(result.nodes)} (job {result.job_id})"
        )
    )
    for col in result.columns:
        table.add_column(Text(col), justify="right", overflow="fold")
    if any(notes):
        table.add_column("note", overflow="fold")
    steps = [precision_step(_noise(result, col)) for col in result.columns]
    for row, note in zip(result.exact_rows or result.rows, notes, strict=True):
        cells = [Text(cell(v, step if isinstance(v, float | Decimal) else None))
                 for v, step in zip(row, steps, strict=True)]  # fmt: skip
        table.add_row(*cells, *((Text(note),) if any(notes) else ()))
    if wide or not out.is_terminal:
        need = Measurement.get(out, out.options.update_width(1_000_000), table).maximum
        width, out.width = out.width, max(out.width, need)  # print clamps to the console's
        try:
            out.print(table)
        finally:
            out.width = width
    else:
        out.print(table)
    for line in mark_lines(result):
        say(line)


def _noise(result: QueryResult, column: str) -> float | None:
    """The noise a column's values carry: DP's 1-sigma, or CKKS's error bound."""
    if column in result.noise_stddev:
        return result.noise_stddev[column]
    return result.error_bound


def mark_lines(result: QueryResult) -> list[str]:
    """One line per mark the result carries: suppressed rows, the remainder, LIMIT's cut."""
    suppressed, remainder = result.flags()
    lines = []
    if any(suppressed):
        lines.append(
            f"  suppressed: {sum(suppressed)} group(s) withheld (values NULL): fewer rows over "
            "all the job's nodes than the policy's minimum group size (under DP: a noisy count)"
        )
    if any(remainder):
        lines.append(
            "  remainder: the row marked holds every row whose GROUP BY value is NULL or not "
            "among the declared values (its key is shown as NULL)"
        )
    if result.cut_by_limit:
        lines.append(
            f"  limit: {result.cut_by_limit} more row(s) that HAVING kept were left out by "
            f"LIMIT/OFFSET ({len(result.rows) + result.cut_by_limit} in all)"
        )
    return lines


def _print_notes(result: QueryResult) -> None:
    """Ledger heads, receipts, the CKKS error bound and DP noise, one line each."""
    for h in result.ledgers:
        root = h.root_hash.hex()[:16]
        say(f"  ledger {h.node}: size {h.size}, root {root}…, entries {list(h.entry_indexes)}")
    if result.receipts:
        say(
            f"  receipts verified: {len(result.receipts)} node(s) proved the approved and "
            f"released entries of job {result.job_id} under their signed checkpoints"
        )
    if result.error_bound is not None:
        say(f"  approximate (ckks): every SUM and COUNT within ±{result.error_bound:.3g}")
    if result.noise_stddev:
        noise = ", ".join(f"{k} ±{v:.3g} (1σ)" for k, v in result.noise_stddev.items())
        say(f"  differential privacy: epsilon {result.epsilon}, noise {noise}")


def say(line: str) -> None:
    """Print one line literally (no console markup)."""
    out.print(line, markup=False, highlight=False)


@app.command()
def nodes(
    federation: Path = FED_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print the nodes as JSON"),
) -> None:
    """Show every node's datasets, typed columns and what you may do there.

    A node that does not answer is marked down; the others are still shown.
    """
    from datafed.client import Federation

    statuses = Federation.from_file(federation).discover()
    if as_json:
        print(json.dumps([s.to_dict() for s in statuses]))
    else:
        show_nodes(statuses)
    if not any(s.up for s in statuses):
        raise typer.Exit(int(ExitCode.UNREACHABLE))


def show_nodes(statuses: list[NodeStatus]) -> None:
    """Print the discovery tables of ``datafed nodes``."""
    for s in statuses:
        if s.info is None:
            say(f"node {s.node} ({s.address}): DOWN: {s.error}")
            continue
        i = s.info
        say(f"node {s.node} ({s.address}): up, {i.agency or 'no agency name'}")
        root = i.ledger.root_hash.hex()[:16]
        say(f"  you are {i.caller}; ledger size {i.ledger.size}, root {root}…")
        for d in i.described.values():
            say(f"  dataset {d.name}" + (f": {d.description}" if d.description else ""))
            table = Table(box=None, padding=(0, 2), show_edge=False)
            for col in ("column", "type", "description"):
                table.add_column(col)
            for c in d.columns:
                table.add_row(Text(c.name), Text(c.type), Text(c.description))
            out.print(Padding(table, (0, 0, 0, 4), expand=False))
            for line in access_lines(d.access):
                say(f"    {line}")


def access_lines(a: DatasetAccess) -> list[str]:
    """What the analyst may do with one dataset, in a few lines."""
    if not a.allowed:
        return ["you may not use this dataset (not an allowed requester)"]
    lines = [
        f"purposes: {', '.join(a.purposes) or 'none'}",
        f"operations: {', '.join(a.operations)}; aggregates: {', '.join(a.aggregates)}",
        f"protections: {', '.join(a.protections)}",
        f"k (min group size): {a.min_group_size} "
        + (
            "(groups with a noisy count under k are flagged); "
            if a.dp
            else "(groups with fewer rows over all nodes are flagged); "
        )
        + f"min participants: {a.min_participants}"
        + (f"; required: {', '.join(a.required_participants)}" if a.required_participants else ""),
    ]
    if a.consortium:
        lines.append(f"exact data: every query names exactly {', '.join(a.consortium)}")
    if a.columns:
        lines.append(f"columns you may read: {', '.join(a.columns)}")
    if a.dp:
        lines.append(
            f"differential privacy: epsilon {a.epsilon_per_query:g} per query, "
            f"{a.budget_left:g} of {a.budget_epsilon:g} left (budget per {a.budget_scope})"
        )
    return lines


def main() -> None:
    """Console entry point: one-line errors for expected failures, never a traceback."""
    run_main(app, (DatafedError, OSError))
