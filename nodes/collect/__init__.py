"""Collection of live data at an aggregator node: the Leader and Helper of Prio3 tasks.

A node with ``[[collect]]`` blocks in its ``node.toml`` aggregates those tasks, each as
their Leader or their Helper (``docs/collect.md``):

* :mod:`.runtime` -- a task's parameters, keys, peer and database; :mod:`.storage` and
  :mod:`.windows` its tables, :mod:`.db` the database (SQLite file or PostgreSQL schema);
* :mod:`.upload` -- the Leader's checks on uploaded reports;
* :mod:`.leader` -- the Leader's aggregation jobs and window closing;
* :mod:`.helper` -- the Helper's side of jobs and closing;
* :mod:`.entries` -- the one ledger entry per closed window, alike at both;
* :mod:`.release` -- a window's aggregate share to a collector, through the policy engine;
* :mod:`.servicer` -- the gRPC service, every RPC through :func:`nodes.rpc.signed_call`;
* :mod:`.worker` -- the aggregation worker processes of a node on PostgreSQL.

:class:`CollectService` ties them to the server: :meth:`~CollectService.open` at start,
:meth:`~CollectService.register` before the server starts, :meth:`~CollectService.start`
after, :meth:`~CollectService.stop` and :meth:`~CollectService.close` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc

from nodes.collect.leader import LeaderLoop
from nodes.collect.runtime import TaskRuntime
from nodes.collect.servicer import add_servicer
from nodes.collect.worker import drain_outbox
from nodes.context import NodeContext

__all__ = ["CollectService"]

log = logging.getLogger("datafed.node")


class CollectService:
    """Every collection task of one node, its Leader loops and worker processes."""

    def __init__(
        self, ctx: NodeContext, tasks: dict[str, TaskRuntime], config_path: Path | None = None
    ) -> None:
        self.ctx = ctx
        self.tasks = tasks
        svc = ctx.config.collect_service
        self.workers = svc.workers if config_path is not None else 0
        drivers = 0 if self.workers else svc.drivers
        self.loops = {
            n: LeaderLoop(ctx, rt, drivers=drivers, lease_s=svc.lease_s)
            for n, rt in tasks.items()
            if rt.role == "leader"
        }
        self.config_path = config_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, ctx: NodeContext, config_path: Path | None = None) -> CollectService:
        """Open every ``[[collect]]`` task (certificates checked, keys derived, databases)."""
        tasks: dict[str, TaskRuntime] = {}
        try:
            for cfg in ctx.config.collect:
                tasks[cfg.name] = TaskRuntime.open(ctx, cfg)
        except BaseException:
            for rt in tasks.values():
                rt.store.close()
            raise
        return cls(ctx, tasks, config_path)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the CollectService to ``server`` (before it starts)."""
        add_servicer(server, self.ctx, self.tasks, self._wake, queued=bool(self.workers))

    def _wake(self, task: str) -> None:
        loop = self.loops.get(task)
        if loop is not None:
            loop.wake()

    def start(self) -> None:
        """Start the Leader loops, the worker processes and the outbox drain."""
        for loop in self.loops.values():
            loop.start()
        if self.workers and self.tasks:
            self.processes = [self._spawn() for _ in range(self.workers)]
            log.info("collect: %d worker process(es) started", self.workers)
        if self.ctx.config.collect_service.database and self.tasks:
            self._drain = asyncio.create_task(self._drain_outboxes())

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self.config_path is not None
        exe = Path(sys.executable).parent / "datafed-node"
        cmd = [str(exe), "collect-worker", "--config", str(self.config_path)]
        cmd += ["--parent", str(os.getpid())]  # a worker outlives no serve, even one killed
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ})

    def _supervise(self) -> None:
        """Start a worker again in place of one that died (its jobs lease out meanwhile)."""
        for i, p in enumerate(self.processes):
            if p.poll() is not None:
                log.warning("collect: worker %d exited (%s); starting another", p.pid, p.returncode)
                self.processes[i] = self._spawn()

    async def _drain_outboxes(self) -> None:
        while True:
            self._supervise()
            for rt in self.tasks.values():
                try:
                    await drain_outbox(self.ctx, rt)
                except Exception as exc:
                    log.warning("collect %s: outbox: %s", rt.name, exc)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Stop the loops and workers; what is stored stays for the next start."""
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None
        for loop in self.loops.values():
            await loop.stop()
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    def close(self) -> None:
        """Close the tasks' databases."""
        for rt in self.tasks.values():
            rt.store.close()
