"""Fair shares of a node: calls in flight and compute threads, per requester.

One analyst with a valid certificate must not be able to take a node's capacity from the
others (issue 17, class 7). Two schedulers, both keyed by the requester -- the identity
of the caller's certificate -- and both deciding on load and identity alone, never on
data (a refusal or a wait is no oracle):

- :class:`Admission` hands out places for calls in flight, from their headers to their
  last byte, in classes: the analysts' calls (``node.max_concurrent_requests``) and the
  calls kept for auditors, witnesses and other nodes (``node.reserved_requests``). A
  requester holds at most ``node.max_requests_per_requester`` places in a class; its
  further calls wait their turn, at most ``node.max_waiting_per_requester`` of them --
  one more is refused at once (:mod:`nodes.intercept` records the refusal).
- :class:`FairPool` runs the blocking work of calls on ``limits.compute_threads``
  threads, at most ``limits.compute_threads_per_requester`` of them for one requester.

Both hand out their slots with a :class:`FairQueue`: among the requesters with work
waiting and under their share, the one served least recently goes first, so a requester
with eight heavy queries waiting delays a newcomer by at most the work already running,
never by its whole backlog.

A slot is released when the work ends, not when its caller stops waiting: a call cut
by a deadline frees its compute slot only once the thread it started is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nodes.errors import Unavailable

__all__ = ["ANALYSTS", "RESERVED", "Admission", "FairPool", "FairQueue", "Slot", "Turns"]

T = TypeVar("T")
#: The class of analysts' calls (and of everything not reserved).
ANALYSTS = "analysts"
#: The class kept for auditors, witnesses and other nodes.
RESERVED = "reserved"


@dataclass
class _Waiting(Generic[T]):
    """A requester's waiting work, oldest first, and when it was last served."""

    items: deque[tuple[int, T]] = field(default_factory=deque)
    last_served: int = -1


class FairQueue(Generic[T]):
    """Slots handed out in turn across requesters (see module docs); no threads, no I/O.

    :meth:`push` queues an item, :meth:`grant` returns the items that get a slot now, in
    order, and :meth:`done` gives a slot back. The next slot goes to the requester under
    its share that was served least recently (never served: first), ties to the oldest
    waiting item. Used from one thread (the event loop) only.
    """

    def __init__(self, slots: int, per_requester: int) -> None:
        if not 1 <= per_requester <= slots:
            raise ValueError("need 1 <= per_requester <= slots")
        self.slots, self.per_requester = slots, per_requester
        self._waiting: dict[str, _Waiting[T]] = {}
        self._running: Counter[str] = Counter()
        self._seq = itertools.count()
        self._turn = itertools.count()

    @property
    def running(self) -> int:
        """Slots in use."""
        return sum(self._running.values())

    def waiting(self, requester: str | None = None) -> int:
        """Items waiting (of ``requester`` only, if given)."""
        if requester is not None:
            w = self._waiting.get(requester)
            return len(w.items) if w is not None else 0
        return sum(len(w.items) for w in self._waiting.values())

    def push(self, requester: str, item: T) -> None:
        """Queue ``item`` of ``requester`` (behind the requester's own waiting items)."""
        self._waiting.setdefault(requester, _Waiting()).items.append((next(self._seq), item))

    def withdraw(self, requester: str, item: T) -> bool:
        """Take a waiting ``item`` back (its caller gave up); False if it is not waiting."""
        w = self._waiting.get(requester)
        if w is None:
            return False
        for entry in w.items:
            if entry[1] is item:
                w.items.remove(entry)
                if not w.items and not self._running[requester]:
                    del self._waiting[requester]
                return True
        return False

    def grant(self) -> list[tuple[str, T]]:
        """Hand out every slot that can be handed out now; return ``(requester, item)``s."""
        out: list[tuple[str, T]] = []
        while self.running < self.slots:
            ready = [
                (w.last_served, w.items[0][0], r)
                for r, w in self._waiting.items()
                if w.items and self._running[r] < self.per_requester
            ]
            if not ready:
                break
            _, _, requester = min(ready)
            w = self._waiting[requester]
            out.append((requester, w.items.popleft()[1]))
            w.last_served = next(self._turn)
            self._running[requester] += 1
        return out

    def done(self, requester: str) -> None:
        """``requester``'s work in one slot ended; forget requesters with nothing left."""
        self._running[requester] -= 1
        if self._running[requester] <= 0:
            del self._running[requester]
            w = self._waiting.get(requester)
            if w is not None and not w.items:
                del self._waiting[requester]


class Turns:
    """Slots of a :class:`FairQueue` for asyncio callers: :meth:`take` waits its turn.

    A slot is given back with :meth:`give_back`; a caller cancelled while it waits takes
    nothing (and a turn granted as it was cancelled is given back at once).
    """

    def __init__(self, slots: int, per_requester: int) -> None:
        self.queue: FairQueue[asyncio.Future[None]] = FairQueue(slots, per_requester)

    async def take(self, requester: str, max_waiting: int | None = None) -> bool:
        """Wait for a slot of ``requester``'s (True once it has one).

        False, at once and holding nothing, if ``max_waiting`` of its calls already wait.
        """
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.push(requester, turn)
        self._grant()
        if not turn.done() and max_waiting is not None:
            if self.queue.waiting(requester) > max_waiting:
                self.queue.withdraw(requester, turn)
                return False
        try:
            await turn
        except asyncio.CancelledError:
            if not self.queue.withdraw(requester, turn):
                self.give_back(requester)  # granted as we were cancelled
            raise
        return True

    def give_back(self, requester: str) -> None:
        """``requester``'s work in one slot ended: the next turn goes out."""
        self.queue.done(requester)
        self._grant()

    def _grant(self) -> None:
        for _, turn in self.queue.grant():
            if not turn.done():  # else its caller is cancelled and gives it back
                turn.set_result(None)


class Slot:
    """One admitted call's place in its class; :meth:`release` gives it back (once)."""

    def __init__(self, turns: Turns, requester: str) -> None:
        self._turns, self.requester = turns, requester
        self._held = True

    def release(self) -> None:
        """Give the place back; a second call does nothing."""
        if self._held:
            self._held = False
            self._turns.give_back(self.requester)


class Admission:
    """Calls in flight per class and per requester, handed out in turn (see module docs).

    ``capacity`` maps each class to its places; a requester holds at most
    ``per_requester`` of them, and at most ``max_waiting`` of its calls wait for one.
    Used from the event loop only.
    """

    def __init__(self, capacity: Mapping[str, int], per_requester: int, max_waiting: int) -> None:
        if per_requester < 1 or max_waiting < 0 or any(c < 1 for c in capacity.values()):
            raise ValueError("need capacities and per_requester >= 1, max_waiting >= 0")
        self._turns = {k: Turns(c, min(per_requester, c)) for k, c in capacity.items()}
        self.max_waiting = max_waiting

    async def enter(self, klass: str, requester: str) -> Slot | None:
        """A place for one call of ``requester`` in ``klass`` when its turn comes.

        ``None``, at once, when ``max_waiting`` of the requester's calls already wait.
        """
        turns = self._turns[klass]
        if not await turns.take(requester, self.max_waiting):
            return None
        return Slot(turns, requester)

    def in_flight(self, klass: str) -> int:
        """Calls of ``klass`` holding a place."""
        return self._turns[klass].queue.running

    def waiting(self, klass: str) -> int:
        """Calls of ``klass`` waiting for a place."""
        return self._turns[klass].queue.waiting()


class FairPool:
    """Blocking work of calls on ``threads`` threads, in :class:`FairQueue` order.

    :meth:`run` is what :meth:`nodes.rpc.SignedCall.compute` awaits. Work withdrawn
    before it starts never runs; work that started holds its slot until it ends.
    """

    #: Seconds :meth:`close` waits for work already running.
    CLOSE_WAIT_S = 30.0

    def __init__(self, threads: int = 4, per_requester: int = 1) -> None:
        self.turns = Turns(threads, per_requester)
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._guard = threading.Lock()
        self._closed = False

    @property
    def queue(self) -> FairQueue[asyncio.Future[None]]:
        """The turns' queue (how many run and wait)."""
        return self.turns.queue

    async def run(self, requester: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a pool thread when ``requester``'s turn comes."""
        loop = asyncio.get_running_loop()
        await self.turns.take(requester)
        if self._closed:
            self.turns.give_back(requester)
            raise Unavailable("the node is stopping")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="datafed-fair")
        running = self._executor.submit(fn, *args)
        with self._guard:
            self._running.add(running)

        def ended(done: concurrent.futures.Future[Any]) -> None:  # on the pool thread
            with self._guard:
                self._running.discard(done)
            try:
                loop.call_soon_threadsafe(self.turns.give_back, requester)
            except RuntimeError:  # the loop is closed: the node is gone
                pass

        running.add_done_callback(ended)
        return await asyncio.wrap_future(running, loop=loop)

    def close(self) -> None:
        """Drop work not started; wait (:data:`CLOSE_WAIT_S` at most) for work running.

        The node closes its stores and ledger next: a computation still running on a
        pool thread (its call cancelled by the server's stop, its thread not) must not
        find them closed under it.
        """
        self._closed = True
        if self._executor is None:
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        with self._guard:
            running = set(self._running)
        _, late = concurrent.futures.wait(running, self.CLOSE_WAIT_S)
        if late:
            logging.getLogger("datafed.node").warning(
                "%d computation(s) still running after %.0f s at shutdown",
                len(late),
                self.CLOSE_WAIT_S,
            )
