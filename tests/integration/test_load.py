"""A small load run: analysts x concurrent queries x every mode, one node restarted.

The figures (queries/s, p50/p99, peak RSS) come from ``benchmarks/test_bench_load.py``;
here the point is that nothing is lost or double-counted (see tests/integration/loadrun.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from datafed.local.federation import LocalFederation
from tests.integration import loadrun


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    lf = loadrun.create(tmp_path_factory.mktemp("load"))
    lf.start()
    try:
        yield lf
    finally:
        lf.stop()


def test_nothing_is_lost_under_load_with_a_restart(fed):
    out = loadrun.run(fed, seconds=12.0, workers_per_analyst=2)
    assert len(out.ok) >= 10, out.failed
    modes = {mode for mode, _ in out.ok.values()}
    assert len(modes) >= 3  # several protection modes went through
    sizes = loadrun.check_ledgers(fed, out)
    assert all(n > 0 for n in sizes.values())
    # a failure is a clean error from the datafed tree, never a crash of the client
    assert all(
        f.split(":")[0] in {"NodeUnavailable", "RemoteError", "ProtocolError"}
        for f in out.failed.values()
    ), out.failed
