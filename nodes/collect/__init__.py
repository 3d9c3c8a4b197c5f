"""Collection of live data at an aggregator node: the Leader and Helper of Prio3 tasks.

A node with ``[[collect]]`` blocks in its ``node.toml`` aggregates those tasks, each as
their Leader or their Helper (``docs/collect.md``):

* :mod:`.runtime` -- a task's parameters, keys, peer and file; :mod:`.storage` the file;
* :mod:`.upload` -- the Leader's checks on uploaded reports;
* :mod:`.leader` -- the Leader's aggregation jobs and window closing;
* :mod:`.helper` -- the Helper's side of jobs and closing;
* :mod:`.entries` -- the one ledger entry per closed window, alike at both;
* :mod:`.release` -- a window's aggregate share to a collector, through the policy engine;
* :mod:`.servicer` -- the gRPC service, every RPC through :func:`nodes.rpc.signed_call`.

:class:`CollectService` ties them to the server: :meth:`~CollectService.open` at start,
:meth:`~CollectService.register` before the server starts, :meth:`~CollectService.start`
after, :meth:`~CollectService.stop` and :meth:`~CollectService.close` at shutdown.
"""

from __future__ import annotations

import grpc

from nodes.collect.leader import LeaderLoop
from nodes.collect.runtime import TaskRuntime
from nodes.collect.servicer import add_servicer
from nodes.context import NodeContext

__all__ = ["CollectService"]


class CollectService:
    """Every collection task of one node and the Leader loops among them."""

    def __init__(self, ctx: NodeContext, tasks: dict[str, TaskRuntime]) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self.loops = {n: LeaderLoop(ctx, rt) for n, rt in tasks.items() if rt.role == "leader"}

    @classmethod
    def open(cls, ctx: NodeContext) -> CollectService:
        """Open every ``[[collect]]`` task (certificates checked, keys derived, files opened)."""
        tasks: dict[str, TaskRuntime] = {}
        try:
            for cfg in ctx.config.collect:
                tasks[cfg.name] = TaskRuntime.open(ctx, cfg)
        except BaseException:
            for rt in tasks.values():
                rt.store.close()
            raise
        return cls(ctx, tasks)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the CollectService to ``server`` (before it starts)."""
        add_servicer(server, self.ctx, self.tasks, self._wake)

    def _wake(self, task: str) -> None:
        loop = self.loops.get(task)
        if loop is not None:
            loop.wake()

    def start(self) -> None:
        """Start the Leader loops (open jobs from before are resent first)."""
        for loop in self.loops.values():
            loop.start()

    async def stop(self) -> None:
        """Stop the Leader loops; what is stored stays for the next start."""
        for loop in self.loops.values():
            await loop.stop()

    def close(self) -> None:
        """Close the tasks' files."""
        for rt in self.tasks.values():
            rt.store.close()
