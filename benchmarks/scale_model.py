"""The scale model of docs/stores.md, computed from measured benchmark rows.

Usage (after the three runs named in docs/stores.md §7)::

    python benchmarks/scale_model.py --engine engine.json --groups LOW.json HIGH.json

``engine.json`` holds the ``engine.*`` rows (``make bench K=engine``); the two group files
hold ``query.*`` rows of ``benchmarks/test_bench_query_modes.py`` at few rows per node and
two group counts.  It prints, as Markdown, each engine's cost per million rows, each
mode's fixed and per-group protection cost, and the modelled latency of one query for a
federation of N agencies with R rows each:

    latency = scan(engine, R) / cores + fixed(mode) + per_group(mode) * G * N / 3

Nodes scan in parallel (each on its own machine), so the scan is one node's; the protection
terms were measured with three nodes and are scaled linearly in N (the analyst's share of
the work -- relaying, combining, decrypting -- grows with the number of nodes).  ``cores``
scales the 2-vCPU measurement to the node's hardware, assuming the engine parallelises a
scan across cores (DuckDB, PostgreSQL's parallel workers, Spark's executors do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MEASURED_CORES = 2
#: Cores an engine used in the measurement (SQLite scans on one thread).
USED_CORES = {"sqlite": 1}
#: Engines with a fixed cost per query (Spark plans and schedules a job); the others' is
#: taken as zero (two points under a loaded machine make a poor intercept).
FIXED_ENGINES = {"spark"}
ROWS = (1e6, 1e7, 1e8, 1e9, 1e10, 1e11)
#: Hardware one agency may give its node, per engine (vCPUs), for the table.
CORES = {"sqlite": 1, "duckdb": 64, "postgresql": 16, "spark": 1000}
MODES = ("plain", "paillier", "shares", "secagg", "ckks")


def _load(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


def engine_costs(rows: list[dict[str, Any]], query: str = "sum") -> dict[str, tuple[float, float]]:
    """Per engine: (fixed seconds, seconds per million rows), from its smallest and largest run."""
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        if not r["name"].startswith("engine.") or r["params"].get("query") != query:
            continue
        n = int(r["params"].get("rows", r["params"].get("rows_per_node", 0)))
        by.setdefault(r["name"].split(".", 1)[1], {})[n] = float(r["ours"])
    out = {}
    for engine, pts in by.items():
        lo, hi = min(pts), max(pts)
        if engine in FIXED_ENGINES and hi > lo:
            slope = max((pts[hi] - pts[lo]) / ((hi - lo) / 1e6), 0.0)
            out[engine] = (max(pts[lo] - slope * lo / 1e6, 0.0), slope)
        else:
            out[engine] = (0.0, pts[hi] / (hi / 1e6))
    return out


def mode_costs(
    low: list[dict[str, Any]], high: list[dict[str, Any]]
) -> dict[str, tuple[float, float]]:
    """Per mode: (fixed seconds, seconds per group) from two runs with different group counts."""

    def times(rows: list[dict[str, Any]]) -> tuple[int, dict[str, float]]:
        groups = 0
        t = {}
        for r in rows:
            if r["name"].startswith("query."):
                t[r["name"].split(".", 1)[1]] = float(r["ours"])
                groups = int(r["params"]["groups"])
        return groups, t

    g1, t1 = times(low)
    g2, t2 = times(high)
    out = {}
    for mode in t1.keys() & t2.keys():
        per_group = max((t2[mode] - t1[mode]) / (g2 - g1), 0.0)
        out[mode] = (max(t1[mode] - per_group * g1, 0.0), per_group)
    return out


def latency(
    engine: tuple[float, float],
    cores: int,
    mode: tuple[float, float],
    rows: float,
    groups: int,
    nodes: int,
    used: int = MEASURED_CORES,
) -> float:
    """Modelled seconds for one query (see the module docstring)."""
    fixed, per_m = engine
    scan = fixed + per_m * rows / 1e6 * used / max(cores, 1)
    return scan + mode[0] + mode[1] * groups * nodes / 3


def _fmt(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def report(
    eng: dict[str, tuple[float, float]], modes: dict[str, tuple[float, float]], groups: int = 100
) -> str:
    """The Markdown tables of docs/stores.md §8."""
    lines = ["| engine | fixed per query | per million rows (2 vCPU) |", "|---|---|---|"]
    for e, (f, s) in sorted(eng.items(), key=lambda x: x[1][1]):
        lines.append(f"| {e} | {_fmt(f)} | {_fmt(s)} |")
    lines += [
        "",
        "| mode | fixed per query (3 nodes) | per group (3 nodes) | protection per group (over plain) |",
        "|---|---|---|---|",
    ]
    base = modes.get("plain", (0.0, 0.0))[1]
    for m in MODES:
        if m in modes:
            f, g = modes[m]
            extra = g - base
            shown = f"{extra * 1000:.2f} ms" if extra > 0 else "below noise"
            lines.append(f"| {m} | {_fmt(f)} | {g * 1000:.2f} ms | {shown} |")
    for nodes in (3, 30):
        lines += [
            "",
            f"N = {nodes} agencies, {groups} groups; engine at the cores given (DuckDB 64, "
            "PostgreSQL 16, Spark 1000, SQLite 1); cells: plain / paillier / secagg",
            "",
            "| rows per agency | " + " | ".join(e for e in CORES if e in eng) + " |",
            "|---|" + "---|" * sum(e in eng for e in CORES),
        ]
        for r in ROWS:
            cells = []
            for e in CORES:
                if e not in eng:
                    continue
                used = USED_CORES.get(e, MEASURED_CORES)
                ts = [
                    latency(eng[e], CORES[e], modes[m], r, groups, nodes, used)
                    for m in ("plain", "paillier", "secagg")
                    if m in modes
                ]
                cells.append(" / ".join(_fmt(t) for t in ts))
            lines.append(f"| {r:.0e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the scale model from benchmark result files."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--engine", type=Path, required=True)
    ap.add_argument("--groups", type=Path, nargs=2, required=True)
    ap.add_argument("--query-groups", type=int, default=100)
    ap.add_argument("--query", default="sum", help="the engine rows' query parameter")
    args = ap.parse_args()
    eng = engine_costs(_load(args.engine), args.query)
    modes = mode_costs(_load(args.groups[0]), _load(args.groups[1]))
    print(report(eng, modes, args.query_groups))


if __name__ == "__main__":
    main()
