"""The Leader's window closer: windows fall due by time alone, in order, bounded per pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from datafed.collect import TaskSpec
from datafed.protocols import Prio3Count
from nodes.collect.closer import due_windows, mark_due
from nodes.collect.db import SqliteDb
from nodes.collect.storage import SCHEMA, CollectStore

P, AFTER, START = 60, 30, 1_800_000_000
SPEC = TaskSpec(
    name="t",
    vdaf="count",
    leader="a",
    helper="b",
    time_precision=P,
    min_batch_size=5,
    start=START,
    end=START + 100 * P,
)
SHARES = (b"", b"l", b"e", b"c")


def w(i: int) -> int:
    return START + i * P


def store_at(tmp_path: Path) -> CollectStore:
    return CollectStore(SqliteDb(tmp_path / "t.sqlite", SCHEMA), b"\x01" * 32, Prio3Count())


def report(i: int, t: int) -> tuple[bytes, int, int, bytes, tuple[bytes, ...]]:
    return (bytes([i]) * 16, t, t - t % P, bytes([i]) * 32, SHARES)


def test_due_windows_follow_the_clock_from_the_frontier_bounded_and_never_past_the_end() -> None:
    assert due_windows(w(0), w(4) + 50, SPEC, AFTER) == [w(0), w(1), w(2), w(3)]
    assert due_windows(w(2), w(4) + 50, SPEC, AFTER) == [w(2), w(3)]
    assert due_windows(w(0), w(1) + AFTER - 1, SPEC, AFTER) == []  # window 0 not due yet
    assert due_windows(w(0), w(1) + AFTER, SPEC, AFTER) == [w(0)]
    assert due_windows(w(0), w(10**6), SPEC, AFTER, most=7) == [w(i) for i in range(7)]
    assert due_windows(w(98), w(10**6), SPEC, AFTER) == [w(98), w(99)]  # the range ends


def test_an_empty_window_falls_due_with_its_neighbours_and_refuses_late_reports(
    tmp_path: Path,
) -> None:
    store = store_at(tmp_path)
    assert mark_due(store, SPEC, AFTER) == []  # no report yet: no task clock
    now = store.now_ms()
    items = [report(1, w(0) + 1), report(2, w(0) + 2), report(3, w(2) + 5), report(4, w(4) + 50)]
    assert store.insert_reports(items, [], now) == ["accepted"] * 4
    assert mark_due(store, SPEC, AFTER) == [w(0), w(1), w(2), w(3)]
    states = {r.start: (r.state, r.count) for r in store.windows()}
    assert states == {
        w(0): ("closing", 0),
        w(1): ("closing", 0),  # no report: a row all the same
        w(2): ("closing", 0),
        w(3): ("closing", 0),
        w(4): ("open", 0),
    }
    assert mark_due(store, SPEC, AFTER) == []  # the frontier moved on: nothing twice
    late = [report(9, w(1) + 7)]
    assert store.insert_reports(late, [], now) == ["batch_collected"]
    store.close()


def test_the_clock_runs_on_in_silence_a_bounded_step_per_pass(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    silent = store.now_ms() - 20 * P * 1000  # the last upload arrived 20 windows ago
    assert store.insert_reports([report(1, w(0) + 1)], [], silent) == ["accepted"]
    first = mark_due(store, SPEC, AFTER, most=8)
    assert first == [w(i) for i in range(8)]
    second = mark_due(store, SPEC, AFTER, most=8)
    assert second == [w(i) for i in range(8, 16)]
    rest = mark_due(store, SPEC, AFTER, most=8)
    assert rest and rest[0] == w(16) and rest[-1] < w(20)  # up to the clock, no further
    store.close()


def test_a_task_without_a_start_begins_at_its_first_report(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    spec = dataclasses.replace(SPEC, start=None)
    now = store.now_ms()
    assert (
        store.insert_reports([report(1, w(5) + 1), report(2, w(8) + 40)], [], now)
        == ["accepted"] * 2
    )
    assert mark_due(store, spec, AFTER) == [w(5), w(6), w(7)]
    store.close()


def test_a_job_finishing_while_a_window_waits_on_jobs_starts_a_closer_pass_at_once(
    monkeypatch: Any,
) -> None:
    """The closer comes back when a job ends (a closing window waited on it), not at its tick.

    With a tick of an hour, a second pass can only come from the finished job; a job ending
    while no closing window waits starts no pass.
    """
    import asyncio

    from nodes.collect import leader as leader_mod

    passes: list[str] = []
    waiting = [True]

    async def close_due(loop: Any) -> bool:
        passes.append("pass")
        return waiting[0]

    class Driver:
        def __init__(self) -> None:
            self.jobs = asyncio.Queue[None]()

        async def step(self) -> bool:
            await self.jobs.get()
            passes.append("job")
            return True

    monkeypatch.setattr(leader_mod, "close_due", close_due)

    async def play() -> None:
        loop = leader_mod.LeaderLoop.__new__(leader_mod.LeaderLoop)
        loop.CLOSE_TICK_S = 3600.0
        driver = Driver()
        loop.drivers, loop.closer, loop._stopping = [driver], True, False  # type: ignore[list-item]
        loop._wake, loop._close_now, loop._closing_waits = asyncio.Event(), asyncio.Event(), False
        tasks = [asyncio.create_task(loop._closer()), asyncio.create_task(loop._worker(driver))]
        for _ in range(20):
            await asyncio.sleep(0)
        assert passes == ["pass"]  # the first pass: a closing window waits on a job
        waiting[0] = False  # the job below was the last one: the next pass closes it
        driver.jobs.put_nowait(None)
        for _ in range(20):
            await asyncio.sleep(0)
        assert passes == ["pass", "job", "pass"]  # at once, an hour before the tick
        driver.jobs.put_nowait(None)
        for _ in range(20):
            await asyncio.sleep(0)
        assert passes == ["pass", "job", "pass", "job"]  # nothing waits: no pass
        loop._stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(play())


def test_windows_close_in_order_behind_one_that_waits_on_its_jobs(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Empty windows 1 and 2 wait while window 0's report is in a job; then all close in order."""
    import asyncio
    from types import SimpleNamespace

    from nodes.collect import closer as closer_mod

    store = store_at(tmp_path)
    items = [report(1, w(0) + 1), report(3, w(3) + 50)]
    assert store.insert_reports(items, [], store.now_ms()) == ["accepted"] * 2
    generation, rows = store.claim_job(b"j" * 16, 1, "me", 60_000)  # window 0's report
    assert (generation, rows.ids) == (1, [bytes([1]) * 16])
    closed: list[int] = []

    async def close_window(loop: Any, start: int) -> None:
        closed.append(start)

    monkeypatch.setattr(closer_mod, "close_window", close_window)
    rt = SimpleNamespace(store=store, spec=SPEC, config=SimpleNamespace(close_after_s=AFTER))
    loop = SimpleNamespace(rt=rt, wake=lambda: None)
    assert asyncio.run(closer_mod.close_due(loop)) is True  # window 0 waits on its job
    assert closed == []  # and windows 1 and 2, empty, wait behind it
    monkeypatch.setattr(store, "unfinished", lambda start: 0)  # the job committed
    assert asyncio.run(closer_mod.close_due(loop)) is False
    assert closed == [w(0), w(1), w(2)]
    store.close()
