"""The ledger's committer thread: group commit for threads and asyncio alike, timely signing.

Every append becomes a :class:`Ticket` on one queue.  A single committer thread takes all
queued tickets (up to ``MAX_BATCH`` entries, never splitting a ticket), writes them in one
transaction with one fsync, and completes them: a thread's ticket by releasing its gate, an
asyncio caller's by one ``loop.call_soon_threadsafe`` per event loop and batch (one wake-up
of the loop, not one per entry).  While a batch is being written, the next one queues up, so
the cost of an fsync is shared by every caller that arrived meanwhile (group commit).

Cancellation: a ticket is queued synchronously by the caller before it first suspends, and
the committer never looks at the waiter.  A cancelled asyncio waiter therefore cannot stall
the log, and its entry is still written: durable and acknowledged to nobody.

Signing: with ``sign_within_s`` the committer signs a checkpoint at most that long after
the first entry that no checkpoint covers (denials included), and once more at close, so
no entry stays unsigned for longer than the bound while the node runs (docs/ledger.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from audit.errors import LedgerError

__all__ = ["MAX_BATCH", "Committer", "Ticket"]

MAX_BATCH = 4096
log = logging.getLogger("datafed.audit")


class Ticket:
    """One caller's entries: leaf bodies, private openings, and how to wake the caller."""

    __slots__ = ("bodies", "error", "first", "future", "gate", "loop", "openings")

    def __init__(self, bodies: list[bytes], openings: list[bytes | None]) -> None:
        self.bodies = bodies
        self.openings = openings
        self.first = -1
        self.error: BaseException | None = None
        self.gate: threading.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[list[int]] | None = None

    def result(self) -> list[int]:
        """The indexes given to the entries, or raise :class:`LedgerError`."""
        if self.error is not None:
            raise LedgerError("ledger append failed") from self.error
        return list(range(self.first, self.first + len(self.bodies)))


def _settle(tickets: list[Ticket]) -> None:
    """Complete asyncio waiters (runs on their event loop); cancelled ones are skipped."""
    for t in tickets:
        fut = t.future
        if fut is None or fut.done():
            continue
        try:
            fut.set_result(t.result())
        except LedgerError as exc:
            fut.set_exception(exc)


class Committer:
    """The queue and thread behind :class:`audit.Ledger` appends.

    Parameters
    ----------
    write : callable
        ``write(batch)`` writes the tickets in one transaction, setting each ticket's
        ``first`` or ``error``; returns False when the store became unusable.
    sign : callable
        Signs (and durably stores) a checkpoint of the current tree.
    sign_within_s : float or None
        Bound on the delay between a commit and a checkpoint covering it; ``None``: no
        background signing.
    unsigned : bool
        Whether the log already holds entries that no checkpoint covers (signed at once).
    """

    def __init__(
        self,
        write: Callable[[list[Ticket]], bool],
        sign: Callable[[], object],
        sign_within_s: float | None,
        unsigned: bool = False,
    ) -> None:
        if sign_within_s is not None and not 0 < sign_within_s <= 86_400:
            raise ValueError(f"sign_within_s must be in (0, 86400], got {sign_within_s}")
        self._write = write
        self._sign = sign
        self._within = sign_within_s
        self._due: float | None = time.monotonic() if unsigned and sign_within_s else None
        self._cv = threading.Condition()
        self._pending: list[Ticket] = []
        self._closing = False
        self._broken = False
        self._thread = threading.Thread(target=self._run, name="datafed-ledger", daemon=True)
        self._thread.start()

    def submit(self, ticket: Ticket) -> None:
        """Queue ``ticket``; raise :class:`LedgerError` if the ledger is closed or broken."""
        with self._cv:
            if self._closing or self._broken:
                raise LedgerError("ledger is closed")
            self._pending.append(ticket)
            if len(self._pending) == 1:
                self._cv.notify()

    def close(self) -> None:
        """Commit what is queued, sign a last checkpoint if needed, stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def closed(self) -> bool:
        """Whether appends are refused."""
        return self._closing or self._broken

    def _wait_s(self) -> float | None:
        return None if self._due is None else max(0.0, self._due - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    wait = self._wait_s()
                    if wait == 0.0:
                        break
                    self._cv.wait(wait)
                batch = self._take()
                last = self._closing and not batch
            if batch:
                self._commit(batch)
            if self._due is not None and (last or time.monotonic() >= self._due):
                self._sign_now()
            if last:
                return

    def _take(self) -> list[Ticket]:
        count = 0
        for i, t in enumerate(self._pending):
            if i and count + len(t.bodies) > MAX_BATCH:
                batch, self._pending = self._pending[:i], self._pending[i:]
                return batch
            count += len(t.bodies)
        batch, self._pending = self._pending, []
        return batch

    def _commit(self, batch: list[Ticket]) -> None:
        if self._broken:
            for t in batch:
                t.error = LedgerError("ledger store is unusable")
        elif not self._write(batch):
            self._broken = True
        elif self._within is not None and self._due is None:
            self._due = time.monotonic() + self._within
        by_loop: dict[asyncio.AbstractEventLoop, list[Ticket]] = {}
        for t in batch:
            if t.loop is None:
                assert t.gate is not None
                t.gate.release()
            else:
                by_loop.setdefault(t.loop, []).append(t)
        for loop, tickets in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, tickets)
            except RuntimeError:  # the loop is closed: nobody waits for these entries
                pass

    def _sign_now(self) -> None:
        try:
            self._sign()
            self._due = None
        except Exception as exc:  # never stop committing; retry after the bound
            log.warning("could not sign a checkpoint: %s", exc)
            self._due = time.monotonic() + (self._within or 1.0)
