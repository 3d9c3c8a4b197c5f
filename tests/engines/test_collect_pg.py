"""Collection scaled out over a real PostgreSQL server, and the faults it must survive.

Each aggregator runs as ``serve`` plus worker processes over its own database of the
session's PostgreSQL server (``tests/engines/pg.py``); every fault is played for real:
a worker killed with SIGKILL mid-job, the database restarted mid-window, two workers
racing for the same job, the same report uploaded to two front ends at once, a worker
whose clock is two hours off. Each ends with exact counts: every report counted once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from datafed.collect import Collector, Uploader
from datafed.collect.local import gateway_file
from datafed.protocols import Prio3Count
from nodes.collect.db import PgDb
from nodes.collect.storage import SCHEMA, CollectStore, WindowDelta
from tests.engines.collect_pg import (
    HELPER,
    LEADER,
    pg_federation,
    query,
    start_worker,
    stop_all,
    strays,
)
from tests.engines.pg import ADMIN, PgServer
from tests.integration.collect_harness import PURPOSE, make_task, wait_closed
from tests.integration.collect_harness import window as w
from tests.unit.nodes.test_collect_node import exercise_close_waits, exercise_store


def _db(pg: PgServer, name: str) -> PgDb:
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{ADMIN}@127.0.0.1:{pg.port}/{name}"
    return PgDb(url, pg.admin_password, "collect_t", SCHEMA)


def test_pg_store_statuses_watermark_leases_and_window_merge(pg: PgServer) -> None:
    _db(pg, "store_unit").close()
    url = f"postgresql://{ADMIN}@127.0.0.1:{pg.port}/store_unit"
    exercise_store(lambda: PgDb(url, pg.admin_password, "collect_t", SCHEMA))


def test_pg_close_waits_for_a_running_step(pg: PgServer) -> None:
    _db(pg, "store_close").close()
    url = f"postgresql://{ADMIN}@127.0.0.1:{pg.port}/store_close"
    exercise_close_waits(lambda: PgDb(url, pg.admin_password, "collect_t", SCHEMA))


def test_two_leaders_claiming_the_same_job_commit_it_once(pg: PgServer) -> None:
    """Two workers (two connections, as two processes) race; the fencing token decides."""
    a = CollectStore(_db(pg, "two_leaders"), b"\x03" * 32, Prio3Count())
    url = f"postgresql://{ADMIN}@127.0.0.1:{pg.port}/two_leaders"
    b = CollectStore(PgDb(url, pg.admin_password, "collect_t", SCHEMA), b"\x03" * 32, Prio3Count())
    shares = (b"", b"l", b"e", b"c")
    rows = [
        (i.to_bytes(16, "big"), 1000 + i, 900, i.to_bytes(32, "big"), shares) for i in range(40)
    ]
    assert set(a.insert_reports(rows, [])) == {"accepted"}
    got: dict[str, list[bytes]] = {}

    def claim(name: str, store: CollectStore) -> None:  # at the same moment
        lease = 200 if name == "a" else 60_000  # a's worker will stall past its lease
        got[name] = [r.report_id for r in store.claim_job(name.encode() * 16, 25, name, lease)[1]]

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got["a"]) & set(got["b"])  # SKIP LOCKED: disjoint claims
    assert len(got["a"]) + len(got["b"]) == 40
    time.sleep(0.3)  # a's lease runs out (its worker stalls)
    taken = b.reclaim_job("b", 60_000)
    assert taken is not None and taken[0] == b"a" * 16 and taken[1] == 2
    one = {900: WindowDelta([len(got["a"])], len(got["a"]), bytes(32), {})}
    assert not a.finish_job(b"a" * 16, 1, one)  # the stalled holder commits nothing
    assert b.finish_job(b"a" * 16, 2, one)  # the new holder commits, once
    assert not b.finish_job(b"a" * 16, 2, one)
    row = a.window(900)
    assert row is not None and row.count == len(got["a"]) and row.agg == [len(got["a"])]
    assert a.unfinished(900) == len(got["b"])
    a.close()
    b.close()


async def _upload(gateway: Path, task: str, items: list[tuple[int, int]]) -> list[str]:
    async with Uploader.from_file(gateway) as up:
        dt = await up.task(task)
        return list((await up.upload(dt, dt.shard_many(items), batch=50)).statuses)


async def _counts(fed, task: str, starts: list[int]) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    async with Collector.from_file(fed.fed_toml) as col:
        out = []
        for s in starts:
            win = await col.get(task, s, purpose=PURPOSE)
            out.append((win.result, win.report_count))
        return out


def test_worker_killed_mid_job_loses_nothing_counts_nothing_twice(
    pg: PgServer, tmp_path: Path
) -> None:
    fed = pg_federation(tmp_path, pg, [make_task("meters", "job_size = 20\n")], leader_workers=2)
    try:
        nodes = {n.spec.name: n for n in fed.nodes}
        fed.stop_node(nodes[HELPER])  # jobs stay claimed, resent with back-off
        items = [(i % 2, w(0) + i % 50) for i in range(120)] + [(1, w(1) + i) for i in range(30)]
        gw = fed.root / "gateway-gw-city.toml"
        asyncio.run(_upload(gw, "meters", items))
        deadline, owners = time.monotonic() + 30, []
        while not owners and time.monotonic() < deadline:
            owners = query(pg, fed, LEADER, "SELECT owner FROM jobs")
            time.sleep(0.1)
        assert owners, "no job was claimed"
        victim = int(owners[0][0].rsplit(":", 1)[1])
        os.kill(victim, signal.SIGKILL)  # mid-job: claimed, sent, not committed
        fed.start_node(nodes[HELPER])
        asyncio.run(_upload(gw, "meters", [(0, w(3))]))  # moves the watermark past both
        asyncio.run(wait_closed(fed, "meters", [w(0), w(1)], timeout=60))
        assert asyncio.run(_counts(fed, "meters", [w(0), w(1)])) == [(60, 120), (30, 30)]
        assert "taking over job" in nodes[LEADER].log.read_text(errors="replace")
        assert query(pg, fed, LEADER, "SELECT count(*) FROM jobs") == [(0,)]
        serve = nodes[LEADER].process
        assert serve is not None and strays(nodes[LEADER].config.parent) != [serve.pid]
        os.kill(serve.pid, signal.SIGKILL)  # serve itself killed: its workers stop by themselves
        serve.wait()
        deadline = time.monotonic() + 10
        while strays(nodes[LEADER].config.parent) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert strays(nodes[LEADER].config.parent) == []
    finally:
        stop_all(fed)


def test_database_restarted_mid_window_counts_every_report_once(
    pg: PgServer, tmp_path: Path
) -> None:
    fed = pg_federation(tmp_path, pg, [make_task("meters", "job_size = 25\n")])
    try:
        gw = fed.root / "gateway-gw-city.toml"
        first = [(1, w(0) + i % 40) for i in range(100)]
        assert set(asyncio.run(_upload(gw, "meters", first))) == {"accepted"}
        pg.restart(down_s=1.0)  # every process loses its connections mid-window
        later = [(0, w(0) + 40 + i % 10) for i in range(50)] + [(1, w(1) + i) for i in range(20)]
        statuses = asyncio.run(_upload(gw, "meters", later))
        assert set(statuses) == {"accepted"}
        asyncio.run(_upload(gw, "meters", [(0, w(3))]))  # moves the watermark past both
        asyncio.run(wait_closed(fed, "meters", [w(0), w(1)], timeout=60))
        assert asyncio.run(_counts(fed, "meters", [w(0), w(1)])) == [(100, 150), (20, 20)]
    finally:
        stop_all(fed)


def test_report_uploaded_twice_to_two_front_ends_at_once_is_stored_once(
    pg: PgServer, tmp_path: Path
) -> None:
    fed = pg_federation(tmp_path, pg, [make_task("meters")])
    front = start_worker(fed, LEADER, "--listen", "127.0.0.1:0", "--no-jobs")
    try:
        direct = fed.root / "gateway-gw-city.toml"
        other = gateway_file(fed, "gw-city", LEADER, front.address, fed.root / "gw-front.toml")

        async def both() -> tuple[list[str], list[str]]:
            async with Uploader.from_file(direct) as up, Uploader.from_file(other) as up2:
                dt = await up.task("meters")
                reports = dt.shard_many([(1, w(0) + i) for i in range(40)])
                a, b = await asyncio.gather(up.upload(dt, reports), up2.upload(dt, reports))
                return list(a.statuses), list(b.statuses)

        a, b = asyncio.run(both())
        assert all(sorted(pair) == ["accepted", "duplicate"] for pair in zip(a, b, strict=True))
        asyncio.run(_upload(direct, "meters", [(0, w(1) + 30)]))  # moves the watermark on
        asyncio.run(wait_closed(fed, "meters", [w(0)], timeout=60))
        assert asyncio.run(_counts(fed, "meters", [w(0)])) == [(40, 40)]
    finally:
        stop_all(fed, front)


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime is not installed")
def test_clock_skewed_worker_takes_no_job_and_decides_nothing_by_its_clock(
    pg: PgServer, tmp_path: Path
) -> None:
    fed = pg_federation(tmp_path, pg, [make_task("meters", "job_size = 10\n")], leader_workers=0)
    skewed = start_worker(
        fed, LEADER, prefix=["faketime", "-f", "+2h"], env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    )
    try:
        time.sleep(1.0)  # the skewed worker looks for jobs first
        items = [(1, w(0) + i % 50) for i in range(60)] + [(0, w(1) + 30)]
        assert set(asyncio.run(_upload(fed.root / "gateway-gw-city.toml", "meters", items))) == {
            "accepted"
        }
        asyncio.run(wait_closed(fed, "meters", [w(0)], timeout=60))
        assert asyncio.run(_counts(fed, "meters", [w(0)])) == [(60, 60)]
        deadline = time.monotonic() + 30
        while "off the database's" not in (log := skewed.log.read_text(errors="replace")):
            assert time.monotonic() < deadline, f"the skewed worker said nothing: {log}"
            time.sleep(0.2)
        assert "taking over" not in log
    finally:
        stop_all(fed, skewed)
