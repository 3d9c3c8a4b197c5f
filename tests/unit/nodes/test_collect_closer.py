"""The Leader's window closer: windows fall due by time alone, in order, bounded per pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
