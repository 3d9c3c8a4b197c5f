"""Where a protected query's time goes: ``python benchmarks/profile_query.py [modes...]``.

Starts the federation of ``test_bench_query_modes.py`` (three node processes on loopback
with mTLS, ``DATAFED_BENCH_QUERY_ROWS`` rows per node on DuckDB, 100 zones), makes the
analyst's first two queries per mode (key made, then cached by the nodes) and pauses as the
benchmark does (``warm``: the nodes' background table builds finish), then times
``ROUNDS`` warm queries per mode and prints, per mode:

- the latency beside ``plain``'s, with the load average;
- CPU per query: the analyst's process (``time.process_time``, cProfile on) and each node
  process (``/proc/<pid>/stat``, Linux), which a loaded machine disturbs less than latency,
  and all four together (``DATAFED_PROFILE_CPROFILE=0`` leaves cProfile off);
- the client's own work by phase (cProfile of the analyst's process: the mode's
  ``params`` -- key generation --, statement signing, ``combine`` -- decryption --, and
  the rest), so that ``latency - client work`` is the nodes' work plus round trips;
- the node's protect step alone, in this process, on the same shape (one node's vector
  of 101 groups, the cached key): what protection adds at a node beyond the scan.

Not a test: a tool for ``docs/bench.md``'s breakdown.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bench_query_modes import GROUPS, MODES, PURPOSE, SQL, _start, warm

ROUNDS = int(os.environ.get("DATAFED_PROFILE_ROUNDS", "5"))
#: ``DATAFED_PROFILE_CPROFILE=0``: CPU and latency only, without cProfile's overhead in the
#: analyst's process (about 25 ms a query; no phases printed then).
CPROFILE = os.environ.get("DATAFED_PROFILE_CPROFILE", "1") != "0"
#: Client-side phases: (label, function name as cProfile shows it, file fragment).
PHASES = (
    ("key/params", "params", "datafed/modes/"),
    ("combine/decrypt", "combine", "datafed/modes/"),
    ("finish (stepped)", "finish", "datafed/modes/"),
    ("sign statement", "sign_job_statement", "datafed/wire/"),
    ("sign requests", "sign", "datafed/client/_transport"),
)


def _phase_seconds(stats: pstats.Stats, func: str, fragment: str) -> float:
    total = 0.0
    for (path, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if name == func and fragment in path:
            total += row[3]  # cumulative seconds
    return total


def _print_phases(stats: pstats.Stats) -> None:
    """The analyst's phases per query (and its top functions with ``DATAFED_PROFILE_TOP``)."""
    for label, func, frag in PHASES:
        s = _phase_seconds(stats, func, frag) / ROUNDS
        if s:
            print(f"   client {label:<18} {s * 1000:8.1f} ms")
    if os.environ.get("DATAFED_PROFILE_TOP"):
        stats.sort_stats("tottime").print_stats(15)


def _protect_alone(mode: str) -> float | None:
    """Seconds of one node's protect step for ``mode`` on a 101-group vector (paillier)."""
    if mode != "paillier":
        return None
    from test_bench_query_path import node_env

    from datafed.modes import PaillierMode

    with tempfile.TemporaryDirectory() as d:
        values = [i * 1000 for i in range((GROUPS + 1) * 3)]
        m, params, env = node_env(Path(d), values)
        from datafed.modes._paillier_keys import KEY_CACHE

        with KEY_CACHE.use("alice", _modulus(m)) as key:
            key.precompute()  # the wide table, as a node has it from the third query on
        times = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            PaillierMode.protect(env, params, values)
            times.append(time.perf_counter() - t)
        return statistics.median(times)


def _node_cpu(local: object) -> list[float]:
    """CPU seconds (user + system, all threads) of each node process so far (Linux)."""
    out = []
    for node in local.nodes:  # type: ignore[attr-defined]
        fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def _modulus(mode: object) -> int:
    return mode._keys[0].n  # type: ignore[attr-defined, no-any-return]


def main(modes: list[str]) -> None:
    """Profile each of ``modes`` (default: every protected mode) beside plain."""
    cache = Path(".pytest_cache/d/datafed-engine-data").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        local, client = _start(Path(root), cache, "duckdb")
        try:
            for mode in ["plain", *modes]:
                warm(client, mode)
                prof = cProfile.Profile()
                times = []
                cpu0, nodes0 = time.process_time(), _node_cpu(local)
                for _ in range(ROUNDS):
                    if CPROFILE:
                        prof.enable()
                    t = time.perf_counter()
                    client.query(SQL, purpose=PURPOSE, protection=mode)
                    times.append(time.perf_counter() - t)
                    prof.disable()
                cpu = (time.process_time() - cpu0) / ROUNDS
                nodes = [(b - a) / ROUNDS for a, b in zip(nodes0, _node_cpu(local), strict=True)]
                latency = statistics.median(times)
                load = os.getloadavg()[0]
                print(
                    f"\n== {mode}: median {latency * 1000:.1f} ms over {ROUNDS} (load {load:.2f})"
                )
                print(
                    f"   CPU: client {cpu * 1000:.1f} ms, nodes "
                    + " / ".join(f"{n * 1000:.1f}" for n in nodes)
                    + f" ms (the first aggregates); all four {(cpu + sum(nodes)) * 1000:.1f} ms"
                )
                if CPROFILE:
                    _print_phases(pstats.Stats(prof))
                alone = _protect_alone(mode)
                if alone is not None:
                    print(f"   node protect alone        {alone * 1000:8.1f} ms (in this process)")
        finally:
            local.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODES))
