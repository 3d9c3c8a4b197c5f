"""Load and soak: analysts x concurrent queries x every mode, three real nodes, a restart.

``load.queries``: successful queries per second with every protection mode mixed and one
node restarted half-way (ours), beside plain queries only and no restart (baseline), the
same analysts, workers and duration, in the same run. The row's ``extra`` carries p50/p99
latency, each node's peak RSS, the failed queries (mostly during the restart) and the
ledger entries, and the accounting of tests/integration/loadrun.py is checked after each
run: nothing lost, every budget the sum of its charges, every receipt verified.
``DATAFED_BENCH_LOAD_S`` sets the duration (default 60 s per run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sizes import env_size

from tests.integration import loadrun

SECONDS = float(env_size("DATAFED_BENCH_LOAD_S", "60", "3"))


def _measure(tmp: Path, benchmark: Any, bench_row: Any, role: str, **kw: Any) -> None:
    fed = loadrun.create(tmp)
    fed.start()
    try:
        result: dict[str, Any] = {}

        def run() -> None:
            result["out"] = loadrun.run(fed, seconds=SECONDS, **kw)

        benchmark.pedantic(run, rounds=1, iterations=1)
        out = result["out"]
        rss = loadrun.peak_rss_mib(fed)
        entries = loadrun.check_ledgers(fed, out)
    finally:
        fed.stop()
    bench_row(
        "load.queries",
        role=role,
        unit="ops/s",
        per_call=len(out.ok),
        params={"seconds": SECONDS, "analysts": len(loadrun.ANALYSTS), "nodes": 3},
        baseline_name="plain only, no restart",
        p50_s=round(out.percentile(50), 3),
        p99_s=round(out.percentile(99), 3),
        peak_rss_mib=rss,
        ok=len(out.ok),
        failed=len(out.failed),
        ledger_entries=entries,
    )


@pytest.mark.slow
def test_load_every_mode_with_a_restart(tmp_path: Path, benchmark: Any, bench_row: Any) -> None:
    _measure(tmp_path, benchmark, bench_row, "ours", restart=True)


@pytest.mark.slow
def test_load_plain_only(tmp_path: Path, benchmark: Any, bench_row: Any) -> None:
    _measure(tmp_path, benchmark, bench_row, "baseline", restart=False, modes=("plain",))
