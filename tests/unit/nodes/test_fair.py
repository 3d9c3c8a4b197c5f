"""The fair schedulers of a node (nodes/fair.py): turn order, shares, reserved places.

No clocks: every assertion is on the order in which work is granted or run, or on what
is admitted and refused.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from nodes.errors import Unavailable
from nodes.fair import ANALYSTS, RESERVED, Admission, FairPool, FairQueue, Slot


# ------------------------------------------------------------------ FairQueue
def _granted(q: FairQueue[str]) -> list[str]:
    return [item for _, item in q.grant()]


def test_a_newcomer_goes_before_a_backlog():
    q: FairQueue[str] = FairQueue(slots=1, per_requester=1)
    for i in range(1, 9):
        q.push("alice", f"a{i}")
    assert _granted(q) == ["a1"]
    q.push("bob", "b1")  # arrives behind alice's seven waiting queries
    assert _granted(q) == []  # the one slot is taken
    q.done("alice")
    assert _granted(q) == ["b1"]  # not a2: bob was never served, alice just was
    q.done("bob")
    assert _granted(q) == ["a2"]


def test_requesters_are_served_least_recently_first():
    q: FairQueue[str] = FairQueue(slots=1, per_requester=1)
    for who in ("alice", "bob", "carol"):
        for i in range(1, 4):
            q.push(who, f"{who[0]}{i}")
    order = []
    for _ in range(9):
        (requester, item), *rest = q.grant()
        assert rest == []
        order.append(item)
        q.done(requester)
    assert order == ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]


def test_one_requester_holds_at_most_its_share():
    q: FairQueue[str] = FairQueue(slots=4, per_requester=1)
    for i in range(1, 9):
        q.push("alice", f"a{i}")
    assert _granted(q) == ["a1"]  # three slots stay free for others
    q.push("bob", "b1")
    q.push("carol", "c1")
    assert _granted(q) == ["b1", "c1"]
    assert q.running == 3 and q.waiting("alice") == 7


def test_a_share_of_two_interleaves():
    q: FairQueue[str] = FairQueue(slots=2, per_requester=2)
    for i in range(1, 4):
        q.push("alice", f"a{i}")
    assert _granted(q) == ["a1", "a2"]  # alone, alice uses her whole share
    q.push("bob", "b1")
    q.done("alice")
    assert _granted(q) == ["b1"]


def test_withdrawn_work_is_never_granted():
    q: FairQueue[str] = FairQueue(slots=1, per_requester=1)
    q.push("alice", "a1")
    q.push("alice", "a2")
    assert _granted(q) == ["a1"]
    assert q.withdraw("alice", "a2")
    assert not q.withdraw("alice", "a1")  # running: not waiting any more
    q.done("alice")
    assert _granted(q) == []
    assert q.running == 0 and q.waiting() == 0


def test_queue_sizes_are_checked():
    with pytest.raises(ValueError):
        FairQueue(slots=2, per_requester=3)
    with pytest.raises(ValueError):
        FairQueue(slots=1, per_requester=0)


# ------------------------------------------------------------------ Admission
async def test_calls_over_the_share_wait_their_turn_and_one_too_many_is_refused():
    a = Admission({ANALYSTS: 64, RESERVED: 16}, per_requester=2, max_waiting=1)
    held = [await a.enter(ANALYSTS, "analyst:alice") for _ in range(2)]
    assert all(isinstance(s, Slot) for s in held)
    waiting = asyncio.ensure_future(a.enter(ANALYSTS, "analyst:alice"))
    await asyncio.sleep(0)
    assert not waiting.done() and a.waiting(ANALYSTS) == 1
    assert await a.enter(ANALYSTS, "analyst:alice") is None  # a second one would wait: no
    assert isinstance(await a.enter(ANALYSTS, "analyst:bob"), Slot)  # bob has his own share
    slot = held[0]
    assert isinstance(slot, Slot)
    slot.release()
    slot.release()  # once only
    assert isinstance(await waiting, Slot)
    assert a.in_flight(ANALYSTS) == 3 and a.waiting(ANALYSTS) == 0


async def test_reserved_places_stay_free_when_the_analysts_class_is_full():
    a = Admission({ANALYSTS: 4, RESERVED: 2}, per_requester=2, max_waiting=8)
    for who in ("alice", "bob"):
        for _ in range(2):
            assert isinstance(await a.enter(ANALYSTS, f"analyst:{who}"), Slot)
    carol = asyncio.ensure_future(a.enter(ANALYSTS, "analyst:carol"))
    await asyncio.sleep(0)
    assert not carol.done()  # the analysts' places are all taken: carol waits
    assert isinstance(await a.enter(RESERVED, "auditor:regulator"), Slot)
    assert isinstance(await a.enter(RESERVED, "node:water-east"), Slot)
    assert a.in_flight(ANALYSTS) == 4 and a.in_flight(RESERVED) == 2
    carol.cancel()  # she gives up: nothing is held for her
    with pytest.raises(asyncio.CancelledError):
        await carol
    assert a.waiting(ANALYSTS) == 0 and a.in_flight(ANALYSTS) == 4


async def test_with_no_waiting_line_a_call_over_the_share_is_refused_at_once():
    a = Admission({ANALYSTS: 64}, per_requester=1, max_waiting=0)
    assert isinstance(await a.enter(ANALYSTS, "analyst:alice"), Slot)
    assert await a.enter(ANALYSTS, "analyst:alice") is None


# ------------------------------------------------------------------- FairPool
class Gated:
    """Blocking work that records when it starts and waits for its gate."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def work(self, tag: str, gated: bool = False) -> str:
        with self.lock:
            self.started.append(tag)
        if gated:
            assert self.gates.setdefault(tag, threading.Event()).wait(30)
        return tag

    def open(self, tag: str) -> None:
        self.gates.setdefault(tag, threading.Event()).set()


async def _until(cond, what: str) -> None:
    for _ in range(3000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still waiting for {what}")


async def test_pool_runs_a_newcomer_before_a_backlog():
    pool, g = FairPool(threads=1, per_requester=1), Gated()
    first = asyncio.ensure_future(pool.run("alice", g.work, "a1", True))
    await _until(lambda: g.started == ["a1"], "a1 to start")
    backlog = [asyncio.ensure_future(pool.run("alice", g.work, f"a{i}")) for i in (2, 3, 4)]
    bob = asyncio.ensure_future(pool.run("bob", g.work, "b1"))
    await asyncio.sleep(0)
    g.open("a1")
    assert await asyncio.gather(first, *backlog, bob) == ["a1", "a2", "a3", "a4", "b1"]
    assert g.started == ["a1", "b1", "a2", "a3", "a4"]
    pool.close()


async def test_cut_work_frees_its_thread_only_when_it_ends():
    pool, g = FairPool(threads=1, per_requester=1), Gated()
    running = asyncio.ensure_future(pool.run("alice", g.work, "a1", True))
    await _until(lambda: g.started == ["a1"], "a1 to start")
    waiting = asyncio.ensure_future(pool.run("alice", g.work, "a2"))
    bob = asyncio.ensure_future(pool.run("bob", g.work, "b1"))
    await asyncio.sleep(0)
    for task in (running, waiting):
        task.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert running.cancelled() and waiting.cancelled()
    # a1's thread is still busy: its slot is held, bob waits for it.
    assert pool.queue.running == 1 and g.started == ["a1"] and not bob.done()
    g.open("a1")
    assert await bob == "b1"
    assert g.started == ["a1", "b1"]  # a2 was withdrawn before it started: it never ran
    assert pool.queue.running == 0 and pool.queue.waiting() == 0
    pool.close()


async def test_pool_errors_reach_the_caller_and_free_the_slot():
    pool = FairPool(threads=1, per_requester=1)

    def fail() -> None:
        raise ValueError("bad step")

    with pytest.raises(ValueError, match="bad step"):
        await pool.run("alice", fail)
    assert await pool.run("alice", sum, [1, 2]) == 3
    assert pool.queue.running == 0
    pool.close()


async def test_close_waits_for_cancelled_work_still_running_and_drops_work_not_started():
    """At shutdown the node closes its stores right after the pool: running work ends first."""
    pool, g = FairPool(threads=1, per_requester=1), Gated()
    running = asyncio.ensure_future(pool.run("alice", g.work, "a1", True))
    await _until(lambda: g.started == ["a1"], "a1 to start")
    queued = asyncio.ensure_future(pool.run("bob", g.work, "b1"))
    await asyncio.sleep(0)
    running.cancel()  # the server's stop cancels the call, not its thread
    await asyncio.gather(running, return_exceptions=True)
    closer = threading.Thread(target=pool.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # a1 still runs: close waits for it
    g.open("a1")
    closer.join(10)
    assert not closer.is_alive() and g.started == ["a1"]  # b1 never started
    queued.cancel()
    with pytest.raises(Unavailable, match="stopping"):  # a closed pool starts nothing new
        await pool.run("carol", g.work, "c1")
    assert g.started == ["a1"] and pool.queue.running == 0
