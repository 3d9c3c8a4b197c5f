"""``datafed-audit`` commands that read records: report, jobs, reconcile, lineage.

Each one verifies every export against the auditor's pinned policy first
(:func:`audit.cli.common.verified_logs`) and refuses, naming each problem and its entry
index, to read an export that does not verify: a tampered record is never reported.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from audit.cli.common import (
    ALLOW_TAIL,
    NO_WITNESSES,
    POLICY,
    Fail,
    app,
    load_policy,
    out,
    verified_logs,
)
from audit.cli.groups import OptionGroup, option, with_groups
from audit.policy import Policy
from audit.records import DataUseRecord
from audit.report.build import build_report, records_csv
from audit.report.html import render_html
from audit.usage import STATEMENT_KEY, list_jobs, summarize
from audit.usage import reconcile as _reconcile
from audit.verify import VerifyReport

__all__ = ["jobs", "lineage", "reconcile", "report"]

#: Each node's records (index order), by node.
_Records = dict[str, list[DataUseRecord]]


@dataclass(frozen=True)
class Exports:
    """The export directories a command reads, and the auditor's trust to verify them with."""

    exports: list[Path]
    policy: Path
    no_witnesses: bool
    allow_unsigned_tail: bool

    def verified(self) -> tuple[Policy, _Records, dict[str, VerifyReport]]:
        """The policy, and each node's records and report, once every export verified."""
        pol = load_policy(self.policy, self.no_witnesses)
        allow = self.allow_unsigned_tail
        logs, reports = verified_logs(self.exports, pol, allow_unsigned_tail=allow)
        return pol, logs, reports


#: ``exports: Exports = EXPORTS``: the export directories and --policy where the parameter
#: stands, --no-witnesses and --allow-unsigned-tail last (see :mod:`audit.cli.groups`).
EXPORTS: Any = OptionGroup(
    Exports,
    (
        option(
            "exports",
            list[Path],
            typer.Argument(..., help="export directories of the nodes (datafed-audit export)"),
        ),
        option("policy", Path, POLICY),
    ),
    last=(
        option("no_witnesses", bool, NO_WITNESSES),
        option("allow_unsigned_tail", bool, ALLOW_TAIL),
    ),
)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _write(target: str, text: str, what: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    Path(target).write_text(text, encoding="utf-8")
    out.print(f"wrote {what} to {target}")


@app.command()
@with_groups
def report(
    exports: Exports = EXPORTS,
    by: list[str] = typer.Option(
        ["requester", "dataset", "purpose"], "--by", help="group the text tables by field"
    ),
    html: Path = typer.Option(None, "--html", help="write a self-contained HTML page"),
    json_out: str = typer.Option(None, "--json", help="write the report as JSON ('-': stdout)"),
    csv_out: str = typer.Option(None, "--csv", help="write every entry as CSV ('-': stdout)"),
) -> None:
    """Report data use (after verifying every export): tables, or --html/--json/--csv files."""
    for field_name in by:
        if field_name not in DataUseRecord.__dataclass_fields__ or field_name == "details":
            raise Fail(f"cannot group by {field_name!r}")
    pol, logs, reports = exports.verified()
    if html or json_out or csv_out:
        data = build_report(logs, reports, pol)
        if html:
            _write(str(html), render_html(data), "the HTML report")
        if json_out:
            _write(json_out, json.dumps(data, indent=2, sort_keys=True) + "\n", "the JSON report")
        if csv_out:
            _write(csv_out, records_csv(logs), "every entry as CSV")
        return
    for rep in reports.values():
        out.print(f"OK {rep.origin}: {rep.entries} entries; {rep.quorum_line()}")
    records = [r for recs in logs.values() for r in recs]
    for field_name in by:
        table = Table(title=f"data use by {field_name}")
        for col in (field_name, "entries", "approved", "denied", "released", "epsilon spent"):
            table.add_column(col, justify="left" if col == field_name else "right")
        for row in summarize(records, field_name):
            d = row.decisions
            table.add_row(
                row.key,
                str(row.entries),
                str(d["approved"]),
                str(d["denied"]),
                str(d["released"]),
                f"{row.epsilon:.4g}",
            )
        out.print(table)


@app.command()
@with_groups
def jobs(
    exports: Exports = EXPORTS,
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the job ids in the logs: nodes, requester, purpose, time and decisions."""
    _, logs, _ = exports.verified()
    rows = list_jobs(logs)
    if as_json:
        data: list[dict[str, Any]] = [
            row.__dict__ | {"first_utc": _utc(row.first_ms), "last_utc": _utc(row.last_ms)}
            for row in rows
        ]
        out.print(json.dumps(data, indent=2, sort_keys=True))
        return
    table = Table(title=f"{len(rows)} job(s)")
    for col in ("job", "nodes", "requester", "purpose", "first seen (UTC)", "entries", "decisions"):
        table.add_column(col, justify="right" if col == "entries" else "left")
    for row in rows:
        table.add_row(
            row.job_id,
            ", ".join(row.nodes),
            ", ".join(row.requesters),
            ", ".join(row.purposes),
            _utc(row.first_ms),
            str(row.entries),
            ", ".join(f"{k} {v}" for k, v in row.decisions.items()),
        )
    out.print(table)


@app.command()
@with_groups
def reconcile(
    job_id: str = typer.Argument(..., help="the job to reconcile"),
    exports: Exports = EXPORTS,
) -> None:
    """Check that every node of a job recorded it alike: requester, purpose, statement, rounds."""
    _, logs, _ = exports.verified()
    problems = _reconcile(job_id, logs)
    if problems and problems[0].startswith("no-such-job"):
        out.print(f"FAIL no such job {job_id!r}: no entry of it in the {len(logs)} export(s)")
        raise typer.Exit(1)
    table = Table(title=f"job {job_id}")
    for col in ("node", "entry indexes", "decisions", "statement"):
        table.add_column(col)
    for node, recs in sorted(logs.items()):
        mine = [(i, r) for i, r in enumerate(recs) if r.job_id == job_id]
        statements = sorted(
            {r.details[STATEMENT_KEY][:16] for _, r in mine if STATEMENT_KEY in r.details}
        )
        table.add_row(
            node,
            ", ".join(str(i) for i, _ in mine) or "-",
            ", ".join(sorted({r.decision for _, r in mine})) or "-",
            ", ".join(statements) or "-",
        )
    out.print(table)
    for p in problems:
        out.print(f"FAIL {p}")
    if problems:
        raise typer.Exit(1)
    out.print(f"OK job {job_id} reconciles across {len(logs)} node(s)")


@app.command()
@with_groups
def lineage(
    model_sha256: str = typer.Argument(..., help="the model's SHA-256 (from the training result)"),
    exports: Exports = EXPORTS,
) -> None:
    """Trace a model through the ledgers: its job, every round, participant and decision."""
    from audit.lineage import format_lineage, model_lineage

    _, logs, _ = exports.verified()
    found = model_lineage(model_sha256.strip().lower(), logs)
    out.print(format_lineage(found))
    if not found.ok:
        raise typer.Exit(1)
