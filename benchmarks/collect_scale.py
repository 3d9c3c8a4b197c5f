"""The scale model of docs/collect.md, computed from measured ``collect.e2e`` rows.

Usage (after ``make bench K=collect``, which writes ``bench-results.json``)::

    python benchmarks/collect_scale.py bench-results.json [--sensors 374e6] [--per-minute 1]
        [--cores 64] [--utilisation 0.7]

For each ``collect.e2e`` row that carries CPU per report (the one-process SQLite service
and the PostgreSQL rows), it prints as Markdown what one reading a minute from every sensor
costs at the measured CPU per report:

    reports/s        = sensors * per_minute / 60
    cores(party)     = reports/s * cpu_us(party) / 1e6 / utilisation
    machines(party)  = cores(party) / cores per machine

for the Leader (its ``serve`` and workers), the Helper and the database servers, and the
write-ahead log the databases must absorb (``wal_bytes_per_report``; the bench's one
PostgreSQL server held both aggregators' databases, so each aggregator's is half).
The CPU was measured on a shared 2-core machine under load: it is an upper bound of the
cost per report, and the model assumes it scales linearly in processes (workers share
nothing but the database; uploads spread over front ends; tasks over databases).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _label(row: dict[str, Any]) -> str:
    p = row["params"]
    if p.get("store") == "postgresql":
        return f"PostgreSQL, {p['workers']} worker(s) per aggregator"
    return "SQLite, one process per aggregator"


def model(rows: list[dict[str, Any]], rate: float, cores: int, util: float) -> str:
    """The Markdown table (see module docs)."""
    out = [
        "| measured row | e2e reports/s | CPU µs/report: Leader / Helper / database "
        "| Leader cores (machines) | Helper cores (machines) | database cores | WAL, GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        x = r.get("extra", {})
        if (
            r["name"] not in ("collect.e2e", "collect.e2e.pg")
            or "leader_cpu_us_per_report" not in x
        ):
            continue
        lead, helper = x["leader_cpu_us_per_report"], x["helper_cpu_us_per_report"]
        db = x.get("database_cpu_us_per_report")
        wal = x.get("wal_bytes_per_report")

        def need(us: float) -> float:
            return rate * us / 1e6 / util

        cells = [
            _label(r),
            f"{r['ours']:,.0f}",
            f"{lead:g} / {helper:g} / {db:g}" if db is not None else f"{lead:g} / {helper:g} / -",
            f"{need(lead):,.0f} ({need(lead) / cores:,.0f})",
            f"{need(helper):,.0f} ({need(helper) / cores:,.0f})",
            f"{need(db):,.0f}" if db is not None else "-",
            f"{rate * wal / 1e9:.1f}" if wal is not None else "-",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:  # pragma: no cover - a report script
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--sensors", type=float, default=374e6)
    ap.add_argument("--per-minute", type=float, default=1.0)
    ap.add_argument("--cores", type=int, default=64, help="cores per machine")
    ap.add_argument("--utilisation", type=float, default=0.7)
    a = ap.parse_args()
    rate = a.sensors * a.per_minute / 60
    rows = json.loads(a.results.read_text())
    print(
        f"{a.sensors:,.0f} sensors x {a.per_minute:g} a minute = {rate:,.0f} reports/s; "
        f"{a.cores}-core machines at {a.utilisation:.0%}\n"
    )
    print(model(rows, rate, a.cores, a.utilisation))


if __name__ == "__main__":
    main()
