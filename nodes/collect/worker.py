"""An aggregation worker process: ``datafed-node collect-worker --config node.toml``.

With ``[collect_service] database = "postgresql://..."`` an aggregator runs as several
processes over one database (``docs/collect.md``): ``serve`` keeps the ledger, releases
windows and closes them; workers -- started by ``serve`` (``workers = N``) or by hand on
other machines -- do the aggregation:

* at a task's **Leader**, job drivers (:class:`nodes.collect.leader.JobDriver`): claim
  stored reports into leased jobs, verify the Leader's side, send each job to the
  Helper, commit;
* at a task's **Helper**, the jobs ``serve`` queued (:func:`nodes.collect.helper.queue_job`):
  claim one under a lease, open the sealed shares, verify, commit.

``--listen ADDR`` makes the process an upload front end too: it serves ``Upload`` and
``GetTask`` (and the Helper's ``AggregateInit``) on its own address, storing into the same
database; ``--no-jobs`` makes it a front end only. A worker holds no ledger: a request it
refuses is kept in the task's outbox, and ``serve`` appends it to the ledger
(:func:`drain_outbox`). A worker killed mid-job loses nothing: its job's lease runs out
and another worker takes the job over. A worker ``serve`` started (``--parent PID``) stops
when that ``serve`` is gone, even one killed without a chance to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc

from datafed.pki.ca import Identity, load_signing_key
from datafed.pki.tls import TlsMaterial
from datafed.pki.trust import TrustStore
from datafed.proto.v1 import collect_pb2
from datafed.wire.signing import RequestHeader
from nodes.collect.db import StoreUnavailable
from nodes.collect.helper import run_job
from nodes.collect.leader import LeaderLoop, owner_name
from nodes.collect.runtime import TaskRuntime
from nodes.collect.servicer import add_servicer
from nodes.config import NodeConfig, load_node_config
from nodes.context import NodeContext
from nodes.partners import server_credentials
from nodes.replay import NonceStore
from nodes.stores import DataStore

__all__ = ["WorkerContext", "drain_outbox", "helper_consumer", "run_worker"]

log = logging.getLogger("datafed.node")


class WorkerContext(NodeContext):
    """A node context without the ledger: refusals go to the task's outbox.

    Only what the collection front end needs is there (name, keys, replay cache); the
    policy engine, datasets and ledger stay with ``serve``.
    """

    tasks: dict[str, TaskRuntime]

    @classmethod
    def open_worker(cls, config: NodeConfig) -> WorkerContext:
        """Keys, the shared replay cache and every task's database."""
        tls = TlsMaterial.load(config.tls)
        key = load_signing_key(config.tls.signing_key)
        nonces = NonceStore(config.node.state_dir / "nonces.sqlite")
        none: Any = None
        trust = TrustStore(tls.ca, config.node.state_dir / "partners")
        ctx = cls(config, tls, key, DataStore([]), none, nonces, none, none, trust=trust)
        ctx.tasks = {
            c.name: TaskRuntime.open_parts(config, tls, key, c, trust.anchors_pem())
            for c in config.collect
        }
        return ctx

    async def record(
        self,
        *,
        caller: Identity | None,
        header: RequestHeader | None,
        dataset: str,
        operation: str,
        protection: str,
        decision: str,
        reason: str,
        request_digest: str,
        **rest: Any,
    ) -> int:
        """Keep the entry in the task's outbox (``serve`` ledgers it); ``-1``."""
        entry = {
            "caller": [caller.role, caller.name] if caller else None,
            "header": [header.job_id, header.purpose] if header else None,
            "operation": operation,
            "decision": decision,
            "reason": reason,
            "request_digest": request_digest,
        }
        rt = self.tasks.get(dataset)
        log.info("%s %s on %r: %s", decision, operation, dataset, reason)
        if rt is not None:
            await asyncio.to_thread(rt.store.outbox_put, entry)
        return -1


async def drain_outbox(ctx: NodeContext, rt: TaskRuntime) -> int:
    """Append the refusals workers kept for ``rt`` to this node's ledger; how many."""
    items = await asyncio.to_thread(rt.store.outbox_take)
    none: Any = None
    for _, e in items:
        caller = Identity(e["caller"][0], e["caller"][1], none) if e["caller"] else None
        header = None
        if e["header"]:
            job, purpose = e["header"]
            header = RequestHeader(caller.name if caller else "", ctx.name, job, b"", 0, 0, purpose)
        await ctx.record(
            caller=caller,
            header=header,
            dataset=rt.name,
            operation=e["operation"],
            protection="prio3",
            decision=e["decision"],
            reason=e["reason"] + " (at a worker)",
            request_digest=e["request_digest"],
        )
    if items:
        await asyncio.to_thread(rt.store.outbox_done, [s for s, _ in items])
    return len(items)


async def helper_consumer(rt: TaskRuntime, lease_s: float, stop: asyncio.Event) -> None:
    """Run the Helper's queued jobs of ``rt`` until ``stop`` (see module docs)."""
    owner, lease_ms = owner_name(), int(lease_s * 1000)
    while not stop.is_set():
        try:
            got = await asyncio.to_thread(rt.store.claim_helper_job, owner, lease_ms)
            if got is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.01)
                continue
            job_id, raw = got
            body = collect_pb2.AggregateInitRequest.FromString(raw)
            try:
                await asyncio.to_thread(run_job, rt, body)
            except Exception as exc:
                log.warning("collect %s: job %s refused: %s", rt.name, job_id.hex(), exc)
            await asyncio.to_thread(rt.store.dequeue_helper_job, job_id)
        except StoreUnavailable as exc:
            log.warning("collect %s: %s; retrying", rt.name, exc)
            await asyncio.sleep(1.0)


async def _serve_front(ctx: WorkerContext, listen: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", ctx.config.node.max_message_bytes)]
    )
    add_servicer(server, ctx, ctx.tasks, lambda _task: None)
    port = server.add_secure_port(listen, server_credentials(ctx))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, port


def orphaned(parent: int) -> bool:
    """Whether the ``serve`` that started this worker (``parent``; 0: none) is gone."""
    return parent > 0 and os.getppid() != parent


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if orphaned(parent):
            log.warning("collect worker: its serve (%d) is gone; stopping", parent)
            stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_worker(
    config_path: Path, *, listen: str = "", jobs: bool = True, parent: int = 0
) -> None:
    """One worker process until SIGINT/SIGTERM, or until ``parent`` is gone (module docs)."""
    cfg = load_node_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pause = 0.5
    while True:  # the database may be down (restarting): wait for it
        if stop.is_set() or orphaned(parent):
            return
        try:
            ctx = WorkerContext.open_worker(cfg)
            break
        except StoreUnavailable as exc:
            log.warning("collect worker: %s; retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(pause * 2, 5.0)
    svc = cfg.collect_service
    watchdog = asyncio.create_task(_watch_parent(parent, stop))
    loops: list[LeaderLoop] = []
    tasks: list[asyncio.Task[None]] = []
    server = None
    if listen:
        server, port = await _serve_front(ctx, listen)
        print(f"READY worker={cfg.node.name} address={listen.rsplit(':', 1)[0]}:{port}", flush=True)
    else:
        print(f"READY worker={cfg.node.name}", flush=True)
    if jobs:
        for rt in ctx.tasks.values():
            if rt.role == "leader":
                lp = LeaderLoop(ctx, rt, drivers=svc.drivers, closer=False, lease_s=svc.lease_s)
                if lp.drivers:  # a clock far off is said at once, not at the first job
                    with contextlib.suppress(StoreUnavailable):
                        await asyncio.to_thread(lp.drivers[0].stands_aside)
                lp.start()
                loops.append(lp)
            else:
                tasks.append(asyncio.create_task(helper_consumer(rt, svc.lease_s, stop)))
    log.info("collect worker of %s started (%s)", cfg.node.name, owner_name())
    started = time.monotonic()
    await stop.wait()
    await watchdog
    for lp in loops:
        await lp.stop()
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    if server is not None:
        await server.stop(2.0)
    for rt in ctx.tasks.values():
        rt.store.close()
    ctx.nonces.close()
    log.info("collect worker stopped after %.0f s", time.monotonic() - started)
