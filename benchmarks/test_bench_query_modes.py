"""Query latency per protection mode vs ``plain``: SUM + COUNT in 100 groups, 3 nodes.

Three real node processes on loopback with mTLS, each over its own table of
``DATAFED_BENCH_QUERY_ROWS`` rows (default 1,000,000, the issue's size) in
``DATAFED_BENCH_QUERY_GROUPS`` zones (default 100).  ``query.plain`` runs once per storage
engine (``engine`` parameter; ``DATAFED_BENCH_QUERY_ENGINES``, default ``duckdb,sqlite``),
each its own pair; each row ``query.<mode>`` runs on ``DATAFED_BENCH_QUERY_MODE_ENGINE``
(default ``duckdb``, the default store of imported datasets, so that the scan does not hide
the protection's cost) and pairs with ``plain`` on that engine measured in the same
minutes: a ``plain`` query runs (untimed by the row) before each of the mode's rounds and
their mean is the row's baseline, since on shared cores the load moves from one row to the
next (docs/bench.md). ``ratio`` is plain's latency over the mode's, so 1.0 means "as fast
as plain".
Data is generated vectorised and cached (``benchmarks/engine_data.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_data import COLUMNS, duckdb_file, sqlite_file
from sizes import env_size, size

from datafed.client import Federation
from datafed.local.federation import LocalFederation, NodeSpec

ROWS = int(env_size("DATAFED_BENCH_QUERY_ROWS", "1000000", "2000"))
GROUPS = int(env_size("DATAFED_BENCH_QUERY_GROUPS", "100", "10"))
ENGINES = os.environ.get("DATAFED_BENCH_QUERY_ENGINES", "duckdb,sqlite").split(",")
MODE_ENGINE = os.environ.get("DATAFED_BENCH_QUERY_MODE_ENGINE", "duckdb")
NODES = ("meter-north", "meter-east", "meter-south")
PURPOSE = "benchmark"
SQL = "SELECT zone, SUM(usage), COUNT(*) FROM readings GROUP BY zone"
PARAMS = {"rows_per_node": ROWS, "groups": GROUPS, "nodes": len(NODES), "tls": True}
#: The modes measured against ``query.plain`` (paillier: 2048-bit key, packed, masked).
MODES = ("paillier", "shares", "secagg", "ckks")
ROUNDS = size(5, 1)
#: Queries before timing, every mode alike: the analyst's Paillier key is made on its first
#: query and cached by the nodes on its second (docs/bench.md has those first queries).
WARMUP = 2
#: Then a pause, every mode alike, so that the timed rounds measure the steady state: after
#: a key's second use each node builds its wide DJN table on a thread of its own (about
#: 1.4 s of CPU a node at 2048 bits on two loaded cores), which would otherwise compete
#: with the first timed queries. The first queries' costs are in docs/bench.md.
SETTLE_S = size(5, 0)
#: After the pause, at most this much longer until the node processes are idle (Linux):
#: on a loaded machine three table builds can outlast the pause, and the timed queries
#: would then measure the build rather than the steady state.
QUIET_MAX_S = size(60, 0)
#: Idle: the node processes together used at most one clock tick in each of two windows.
QUIET_WINDOW_S = 0.25
#: The node processes of each federation started here (by its client's ``id``).
_NODE_PIDS: dict[int, list[int]] = {}


def warm(client: Federation, mode: str) -> None:
    """The warm-up queries of ``mode``, then the pause (none in the smoke run)."""
    for _ in range(size(WARMUP, 0)):
        _run(client, mode)
    time.sleep(SETTLE_S)
    wait_quiet(_NODE_PIDS.get(id(client), []))


def _cpu_ticks(pids: list[int]) -> int | None:
    """User + system clock ticks of ``pids`` so far (None where /proc cannot tell)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total


def wait_quiet(pids: list[int]) -> float:
    """Wait (at most :data:`QUIET_MAX_S`) until ``pids`` are idle; return the seconds waited."""
    start = time.monotonic()
    last = _cpu_ticks(pids) if pids and QUIET_MAX_S else None
    quiet = 0
    while last is not None and quiet < 2 and time.monotonic() - start < QUIET_MAX_S:
        time.sleep(QUIET_WINDOW_S)
        now = _cpu_ticks(pids)
        if now is None:
            break
        quiet, last = (quiet + 1 if now - last <= 1 else 0), now
    return time.monotonic() - start


def _policy() -> str:
    zones = ", ".join(str(z) for z in range(GROUPS))
    return (
        'allowed_requesters = ["alice"]\n'
        f'allowed_purposes = ["{PURPOSE}"]\n'
        'allowed_aggregates = ["sum", "count"]\n'
        'allowed_protections = ["plain", "paillier", "shares", "secagg", "ckks"]\n'
        "min_group_size = 1\n"
        "person_level = false\n"
        "[datasets.policy.group_domains]\n"
        f"zone = [{zones}]\n"
    )


def _start(root: Path, cache: Path, engine: str) -> tuple[LocalFederation, Federation]:
    specs = [
        NodeSpec(
            name=name,
            agency=f"{name} metering office",
            datasets=[("readings", COLUMNS, [])],
            policy_toml=_policy(),
        )
        for name in NODES
    ]
    local = LocalFederation.create(root, specs)
    make = duckdb_file if engine == "duckdb" else sqlite_file
    for i, node in enumerate(local.nodes):
        data = make(cache, ROWS, seed=i, groups=GROUPS)
        text = node.config.read_text().replace('path = "data/readings.sqlite"', f'path = "{data}"')
        node.config.write_text(text)
    local.timeout_s = 300.0
    local.start()
    client = Federation.from_file(local.fed_toml)
    _NODE_PIDS[id(client)] = [n.process.pid for n in local.nodes if n.process is not None]
    client.query(SQL, purpose=PURPOSE, protection="plain")  # warm the page cache
    return local, client


@pytest.fixture(scope="module")
def feds(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Federation]]:
    """One federation per engine, started on first use, stopped after the module."""
    cache = Path(request.config.cache.mkdir("datafed-engine-data"))
    started: dict[str, tuple[LocalFederation, Federation]] = {}

    class Lazy(dict[str, Federation]):
        def __missing__(self, engine: str) -> Federation:
            root = tmp_path_factory.mktemp(f"bench-modes-{engine}")
            started[engine] = _start(root, cache, engine)
            self[engine] = started[engine][1]
            return self[engine]

    try:
        yield Lazy()
    finally:
        for local, _ in started.values():
            local.stop()


def _run(client: Federation, mode: str) -> list[tuple]:
    result = client.query(SQL, purpose=PURPOSE, protection=mode)
    return [tuple(r) for r in result.rows]


def declared(rows: list[tuple]) -> list[tuple]:
    """The rows of the declared zones: a protected mode adds the node's remainder group
    (key NULL, no rows here: every zone of the data is declared), which plain has not."""
    rest = [r for r in rows if r[0] is None]
    assert all(not r[2] for r in rest), rest  # no row outside the declared zones
    return [r for r in rows if r[0] is not None]


@pytest.mark.parametrize("engine", ENGINES)
def test_query_plain(benchmark, bench_row, feds, engine):
    bench_row(
        "query.plain",
        role="both",
        unit="s",
        params={**PARAMS, "engine": engine},
        pair=f"query|{engine}",
        baseline_name="query.plain",
    )
    fed = feds[engine]
    warm(fed, "plain")
    rows = benchmark.pedantic(_run, args=(fed, "plain"), rounds=ROUNDS, iterations=1)
    assert len(rows) == GROUPS and sum(r[2] for r in rows) == ROWS * len(NODES)


@pytest.mark.parametrize("mode", MODES)
def test_query_mode(benchmark, bench_row, feds, mode):
    params = {**PARAMS, "engine": MODE_ENGINE}
    pair = f"query|{MODE_ENGINE}|{mode}"
    bench_row(
        f"query.{mode}",
        role="ours",
        unit="s",
        params=params,
        pair=pair,
        baseline_name="query.plain",
    )
    plain = bench_row(
        "query.plain", role="baseline", unit="s", params=params, pair=pair, baseline_name=""
    )
    fed = feds[MODE_ENGINE]
    warm(fed, mode)
    plain_s: list[float] = []

    def plain_round() -> None:  # untimed by the benchmark: before each of the mode's rounds
        t = time.perf_counter()
        _run(fed, "plain")
        plain_s.append(time.perf_counter() - t)

    timed = benchmark.pedantic(
        _run, args=(fed, mode), setup=plain_round, rounds=ROUNDS, iterations=1
    )
    plain.value_override = sum(plain_s) / len(plain_s)  # the mean, as the mode's row
    rows = declared(timed)
    plain = declared(_run(fed, "plain"))
    assert [r[0] for r in rows] == [r[0] for r in plain]
    assert [r[2] for r in rows] == [r[2] for r in plain]  # counts exact in every mode
    tolerance = 0.05 if mode == "ckks" else 0.0
    assert all(abs(a[1] - b[1]) <= tolerance for a, b in zip(rows, plain, strict=True))
