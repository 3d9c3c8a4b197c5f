"""Benchmark harness: pairs each measurement with its baseline from the same run.

A benchmark test asks for the ``bench_row`` fixture and declares what it measures::

    def test_encrypt_ours(benchmark, bench_row):
        bench_row("paillier.encrypt", role="ours", unit="ops/s", per_call=64,
                  params={"bits": 2048}, baseline_name="phe")
        benchmark(encrypt_64_values)

    def test_encrypt_phe(benchmark, bench_row):
        bench_row("paillier.encrypt", role="baseline", unit="ops/s", per_call=64,
                  params={"bits": 2048}, baseline_name="phe")
        benchmark(phe_encrypt_64_values)

``bench_row`` returns the row; a test that times something finer than the benchmarked
call (one round of a deployed job) sets ``row.value_override`` to it.

Rows pair on ``pair`` (default: name + params).  Several ``ours`` rows may share one
baseline (``pair="query"``); ``role="both"`` is a row that is its own baseline
(``query.plain``).  At the end of the session the table is printed and the rows are
written to ``bench-results.json`` (docs/bench.md): ``ratio`` is how many times better ours
is, i.e. ours/baseline for a rate and baseline/ours for a time.

The smoke run (``DATAFED_BENCH_SMOKE=1``, ``make benchsmoke``, part of ``make test``; see
``benchmarks/sizes.py``) runs every benchmark once -- one round, no warm-up, its smallest
size -- asserts no figure, writes ``bench-smoke.json`` instead, and fails the session if a
benchmark that passed wrote no row or a row found no baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sizes import SMOKE

RATE_UNITS = {"ops/s", "values/s", "entries/s", "proofs/s", "leaves/s", "items/s", "bytes/s"}


@dataclass
class _Measure:
    name: str
    role: str
    unit: str
    params: dict[str, Any]
    per_call: float
    baseline_name: str
    pair: str
    value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: What the test measured itself (seconds, or per-call units), instead of the mean.
    value_override: float | None = None


_MEASURES: list[_Measure] = []
#: Smoke run: the benchmark tests that passed, and those of them that wrote a row.
_PASSED: list[str] = []
_WROTE: set[str] = set()


def _one_round(benchmark: Any) -> None:
    """Smoke run: the fixture's ``pedantic`` and ``__call__`` run the function once."""
    pedantic = benchmark.pedantic

    def once(target: Any, args: Any = (), kwargs: Any = None, setup: Any = None, **_: Any) -> Any:
        return pedantic(
            target, args=args, kwargs=kwargs, setup=setup, rounds=1, iterations=1, warmup_rounds=0
        )

    def call(self: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        return once(target, args=args, kwargs=kwargs)

    benchmark.pedantic = once
    benchmark.__class__ = type("OneRound", (benchmark.__class__,), {"__call__": call})


@pytest.fixture
def benchmark(benchmark: Any) -> Any:
    """pytest-benchmark's fixture; in the smoke run, one round of everything."""
    if SMOKE:
        _one_round(benchmark)
    return benchmark


@pytest.fixture
def bench_row(benchmark: Any, request: pytest.FixtureRequest) -> Any:
    """Declare the row this benchmark test measures (see module docstring)."""
    declared: list[_Measure] = []

    def declare(
        name: str,
        *,
        role: str,
        unit: str,
        baseline_name: str,
        params: dict[str, Any] | None = None,
        per_call: float = 1.0,
        pair: str | None = None,
        **extra: Any,
    ) -> _Measure:
        if role not in {"ours", "baseline", "both"}:
            raise ValueError(f"role must be ours, baseline or both, got {role!r}")
        if unit not in RATE_UNITS and unit != "s":
            raise ValueError(f"unknown unit {unit!r}")
        params = dict(params or {})
        key = pair or f"{name}|{json.dumps(params, sort_keys=True)}"
        m = _Measure(name, role, unit, params, per_call, baseline_name, key, extra=dict(extra))
        declared.append(m)
        benchmark.group = key
        benchmark.extra_info.update({"row": name, "role": role, **params})
        return m

    yield declare
    stats = getattr(benchmark, "stats", None)
    if not declared or stats is None or not stats.stats.data:
        return
    mean = float(stats.stats.mean)
    for m in declared:
        took = mean if m.value_override is None else m.value_override
        m.value = m.per_call / took if m.unit in RATE_UNITS else took
        _MEASURES.append(m)
    _WROTE.add(request.node.nodeid)


def _rows() -> list[dict[str, Any]]:
    baselines: dict[str, _Measure] = {}
    for m in _MEASURES:
        if m.role in {"baseline", "both"}:
            baselines[m.pair] = m
    rows: list[dict[str, Any]] = []
    for m in _MEASURES:
        if m.role == "baseline":
            continue
        base = baselines.get(m.pair)
        if base is None or m.value is None or base.value is None:
            continue
        if m.unit in RATE_UNITS:
            ratio = m.value / base.value
        else:
            ratio = base.value / m.value
        rows.append(
            {
                "name": m.name,
                "params": m.params,
                "unit": m.unit,
                "ours": m.value,
                "baseline_name": m.baseline_name,
                "baseline": base.value,
                "ratio": ratio,
                **({"extra": m.extra} if m.extra else {}),
            }
        )
    return rows


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Smoke run: remember every benchmark test that passed."""
    if report.when == "call" and report.passed:
        _PASSED.append(report.nodeid)


def smoke_problems(
    passed: list[str], wrote: set[str], measures: list[_Measure], rows: list[dict[str, Any]]
) -> list[str]:
    """What fails a smoke run: a benchmark that passed without a row, a row without a pair."""
    problems = [f"{t}: ran but wrote no benchmark row" for t in passed if t not in wrote]
    written = {(r["name"], json.dumps(r["params"], sort_keys=True)) for r in rows}
    measured = {m.pair for m in measures if m.role != "baseline"}
    for m in measures:
        key = (m.name, json.dumps(m.params, sort_keys=True))
        if m.role != "baseline" and key not in written:
            problems.append(f"row {m.name} {m.params}: no baseline in the same run")
        if m.role == "baseline" and m.pair not in measured:
            problems.append(f"baseline {m.name} {m.params}: no row pairs with it")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Smoke run: fail the session if a benchmark ran without writing its row."""
    if not SMOKE:
        return
    problems = smoke_problems(_PASSED, _WROTE, _MEASURES, _rows())
    session.config.stash[_PROBLEMS] = problems
    if problems and session.exitstatus == 0:
        session.exitstatus = 1


_PROBLEMS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ours-vs-baseline table and write ``bench-results.json``."""
    for problem in terminalreporter.config.stash.get(_PROBLEMS, []):
        terminalreporter.write_line(f"SMOKE FAILURE: {problem}", red=True)
    rows = _rows()
    if not rows:
        return
    name = "bench-smoke.json" if SMOKE else "bench-results.json"
    out = Path(terminalreporter.config.rootpath) / name
    out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    tr = terminalreporter
    tr.write_sep("=", "datafed benchmark rows (ours vs baseline, same run)")
    header = f"{'row':<28} {'params':<34} {'ours':>14} {'baseline':>14}  {'unit':<9} {'ratio':>8}  baseline"
    tr.write_line(header)
    for r in rows:
        params = ",".join(f"{k}={v}" for k, v in sorted(r["params"].items()))
        tr.write_line(
            f"{r['name']:<28} {params[:34]:<34} {r['ours']:>14.6g} {r['baseline']:>14.6g}  "
            f"{r['unit']:<9} {r['ratio']:>7.2f}x  {r['baseline_name']}"
        )
    tr.write_line(f"wrote {len(rows)} rows to {out.name}")
