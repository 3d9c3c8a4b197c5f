"""Progress of a long job, reported step by step to an optional callback.

:meth:`Federation.aquery <datafed.client.Federation.aquery>` and
:meth:`~datafed.client.Federation.aintersection_sum` take ``progress``, a callable that
receives one :class:`Step` when a step starts and one when it ends; ``datafed`` shows them
as live lines on stderr (``--quiet`` turns them off).  A step names a node (or ``""`` for
the analyst's own work: key generation, decryption) and carries nothing from the answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, TypeVar

from datafed.modes import StepSession

__all__ = [
    "CURRENT",
    "Progress",
    "ReportingSession",
    "Step",
    "ignore",
    "reported",
    "reporting",
]


@dataclass(frozen=True)
class Step:
    """One step of a job at one node: started, done or failed."""

    node: str
    step: str
    state: Literal["start", "done", "failed"]


Progress = Callable[[Step], None]


def ignore(_step: Step) -> None:
    """The default callback: report nothing."""


#: The callback of the job running in this context (tasks the job starts inherit it).
CURRENT: ContextVar[Progress] = ContextVar("datafed_progress", default=ignore)


C = TypeVar("C")
T = TypeVar("T")


@contextmanager
def reporting(report: Progress, node: str, step: str) -> Iterator[None]:
    """Report ``step`` at ``node`` as started, then done or failed (the error propagates)."""
    report(Step(node, step, "start"))
    try:
        yield
    except BaseException:
        report(Step(node, step, "failed"))
        raise
    report(Step(node, step, "done"))


def reported(
    report: Progress, step: str
) -> Callable[[Callable[[str, C], Awaitable[T]]], Callable[[str, C], Awaitable[T]]]:
    """Wrap a per-node call ``(node, channel) -> result`` to report its start and end."""

    def wrap(fn: Callable[[str, C], Awaitable[T]]) -> Callable[[str, C], Awaitable[T]]:
        async def call(node: str, ch: C) -> T:
            with reporting(report, node, step):
                return await fn(node, ch)

        return call

    return wrap


class ReportingSession:
    """A :class:`~datafed.modes.StepSession` that reports each protocol step it relays."""

    def __init__(self, inner: StepSession, names: Sequence[str], report: Progress) -> None:
        self._inner = inner
        self._names = tuple(names)
        self._report = report
        self.job_id = inner.job_id
        self.binding = inner.binding

    async def step(self, node: str, round_: int, payload: bytes) -> bytes:
        """Relay one step to ``node``, reporting it by the mode's name for the round."""
        name = self._names[round_ - 1] if 0 < round_ <= len(self._names) else f"step {round_}"
        with reporting(self._report, node, name):
            return await self._inner.step(node, round_, payload)
