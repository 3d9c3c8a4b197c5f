"""The benchmarks' smoke run (``make benchsmoke``, part of ``make test``) fails when it should.

A copy of the benchmark harness (``benchmarks/conftest.py``, ``benchmarks/sizes.py``) runs
small benchmark files in a pytest subprocess: a benchmark that runs but writes no row, or
a row without its baseline, fails the smoke run; a sound file passes with one round of
each benchmark however many it asks for, and writes ``bench-smoke.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

SOUND = """
CALLS = []

def test_ours(benchmark, bench_row):
    bench_row("x.op", role="ours", unit="s", baseline_name="b")
    benchmark.pedantic(lambda: CALLS.append(1), rounds=7, iterations=3, warmup_rounds=2)
    assert len(CALLS) == 1  # one round, no warm-up

def test_base(benchmark, bench_row):
    bench_row("x.op", role="baseline", unit="s", baseline_name="b")
    benchmark(lambda: None)
"""

ROWLESS = """
def test_forgot_its_row(benchmark, bench_row):
    benchmark(lambda: None)
"""

UNPAIRED = """
def test_ours_alone(benchmark, bench_row):
    bench_row("y.op", role="ours", unit="s", baseline_name="nobody")
    benchmark(lambda: None)
"""


def _smoke(tmp_path: Path, body: str) -> tuple[int, str]:
    for name in ("conftest.py", "sizes.py"):
        shutil.copy(BENCH / name, tmp_path / name)
    (tmp_path / "test_bench_case.py").write_text(body)
    env = {**os.environ, "DATAFED_BENCH_SMOKE": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.returncode, out.stdout + out.stderr


def test_a_sound_benchmark_file_passes_with_one_round(tmp_path: Path) -> None:
    code, out = _smoke(tmp_path, SOUND)
    assert code == 0, out
    rows = json.loads((tmp_path / "bench-smoke.json").read_text())
    assert [r["name"] for r in rows] == ["x.op"]


def test_a_benchmark_without_its_row_fails_the_smoke_run(tmp_path: Path) -> None:
    code, out = _smoke(tmp_path, SOUND + ROWLESS)
    assert code == 1, out
    assert "test_forgot_its_row: ran but wrote no benchmark row" in out


def test_a_row_without_its_baseline_fails_the_smoke_run(tmp_path: Path) -> None:
    code, out = _smoke(tmp_path, SOUND + UNPAIRED)
    assert code == 1, out
    assert "row y.op {}: no baseline in the same run" in out
