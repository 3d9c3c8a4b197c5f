"""The query benchmarks time the steady state: after the warm-up they wait for idle nodes.

``benchmarks/test_bench_query_modes.py`` pauses after the warm-up queries and then waits
until the node processes are idle (their background table builds done), at most
``QUIET_MAX_S``; a busy process is waited for, an idle one is not.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import test_bench_query_modes as modes

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_the_benchmark_waits_for_busy_node_processes_and_not_for_idle_ones(monkeypatch):
    monkeypatch.setattr(modes, "QUIET_MAX_S", 30)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    spin = "import time\nt = time.time()\nwhile time.time() - t < 2.5:\n    pass\n"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        assert modes.wait_quiet([idle.pid]) < 1.5
        assert busy.poll() is None  # still spinning: it must be waited for
        assert modes.wait_quiet([idle.pid, busy.pid]) >= 0.5
        assert busy.poll() is not None  # returned only once the busy one was done
    finally:
        for p in (idle, busy):
            p.kill()
            p.wait()


def test_the_wait_is_bounded_and_off_in_the_smoke_run(monkeypatch):
    monkeypatch.setattr(modes, "QUIET_MAX_S", 0)
    assert modes.wait_quiet([1]) < 0.1
    assert modes.wait_quiet([]) < 0.1
