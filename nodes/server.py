"""The agency node's gRPC server: mTLS required, health checking, reflection, graceful stop.

Reflection lists every service the node serves. ``node.health_listen`` adds a second,
plaintext port that serves only gRPC health checking (grpc.health.v1), for orchestrators
that cannot present a client certificate; it shares the main server's health status.
``tls.crl`` makes the gate refuse revoked certificates (:mod:`datafed.pki.crl`).
Every call passes :class:`nodes.intercept.CallGuard` first: a fair share of the node per
requester, places kept for auditors and witnesses, deadlines, every refusal recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from audit.witness import WitnessStore
from datafed.pki.crl import unwatch_crl, watch_crl
from datafed.pki.tls import server_credentials
from datafed.proto.v1 import (
    collect_pb2,
    ledger_pb2,
    protocol_pb2,
    psi_pb2,
    query_pb2,
    query_pb2_grpc,
    training_pb2,
)
from nodes.collect import CollectService
from nodes.config import NodeConfig, NodeSection
from nodes.context import NodeContext
from nodes.fl.servicer import add_training_service
from nodes.intercept import CallGuard
from nodes.ledger.publish import Publisher, open_witness_store
from nodes.ledger.servicer import add_ledger_services
from nodes.limits import install as install_limits
from nodes.metrics_http import start_metrics_server
from nodes.psi.servicer import add_psi_service
from nodes.query.servicer import QueryServicer
from nodes.query.steps import add_protocol_service
from nodes.reload import reload_policy

__all__ = [
    "SERVICE_NAMES",
    "backstop",
    "build_server",
    "pid_file",
    "reload_policy",
    "serve",
    "server_options",
    "start_health_server",
]

log = logging.getLogger("datafed.node")
#: Every service a node serves (reflection lists them; health reports each).
SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (query_pb2, "QueryService"),
        (ledger_pb2, "LedgerService"),
        (protocol_pb2, "ProtocolService"),
        (psi_pb2, "PsiService"),
        (training_pb2, "TrainingService"),
        (collect_pb2, "CollectService"),
    )
)
GRACE_S = 5.0
#: Connections without calls close after this long (clients reconnect when they need to).
IDLE_CONNECTION_MS = 300_000
#: :func:`backstop` is this many times the places and one requester's waiting line.
BACKSTOP_FACTOR = 8


async def build_server(
    ctx: NodeContext, witness: WitnessStore | None = None
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """Create the server with every service registered; return it and its bound port."""
    install_limits(ctx)  # [limits]: job quotas, compute threads, Paillier key cache
    server = grpc.aio.server(
        interceptors=[CallGuard(ctx)],  # shares, deadlines, refusals recorded
        options=server_options(ctx.config.node),
        maximum_concurrent_rpcs=backstop(ctx.config.node),
    )
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(ctx), server)
    add_ledger_services(server, ctx.ledger, witness)
    add_protocol_service(server, ctx)
    add_psi_service(server, ctx)
    add_training_service(server, ctx)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    port = server.add_secure_port(ctx.config.node.listen, server_credentials(ctx.tls))
    if port == 0:
        raise OSError(f"cannot listen on {ctx.config.node.listen}")
    return server, port, health


def server_options(node: NodeSection) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments (docs/policy.md#limits).

    One connection carries at most ``max_requests_per_requester`` calls at once (HTTP/2
    SETTINGS_MAX_CONCURRENT_STREAMS: more wait at the caller, they are not refused);
    connections without calls close after five minutes; the node pings a quiet
    connection every minute and drops one that does not answer in 20 seconds.
    """
    return [
        ("grpc.max_receive_message_length", node.max_message_bytes),
        ("grpc.max_send_message_length", node.max_message_bytes),
        ("grpc.max_concurrent_streams", node.max_requests_per_requester),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


def backstop(node: NodeSection) -> int:
    """The gRPC server's own limit on calls alive at once, far above what the guard admits.

    :class:`CallGuard` admits, refuses and records every call; this limit, which refuses
    without a record, only bounds a flood of calls being refused faster than the
    refusals are written.
    """
    places = node.max_concurrent_requests + node.reserved_requests
    return BACKSTOP_FACTOR * (places + node.max_waiting_per_requester)


def pid_file(config: NodeConfig) -> Path:
    """Where a serving node writes its process id (``datafed-node reload`` reads it)."""
    return config.node.state_dir / "node.pid"


async def start_health_server(
    listen: str, health: health_aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """Serve ``health`` alone, without TLS, on ``listen``; return the server and its port."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on node.health_listen {listen}")
    await server.start()
    return server, port


class _Serving:
    """The parts of one serving node, started in order and stopped in order (:func:`serve`)."""

    def __init__(self, ctx: NodeContext, config_path: Path | None = None) -> None:
        self.ctx = ctx
        self.config_path = config_path
        self.witness: WitnessStore | None = None
        self.server: grpc.aio.Server | None = None
        self.health: health_aio.HealthServicer | None = None
        self.collect: CollectService | None = None
        self.health_server: grpc.aio.Server | None = None
        self.metrics_server: asyncio.Server | None = None
        self.publisher: Publisher | None = None

    async def start(self) -> int:
        """Witness store, services, collection tasks, health port, publisher; return the port."""
        ctx, node = self.ctx, self.ctx.config.node
        self.witness = open_witness_store(ctx)
        server, port, health = await build_server(ctx, self.witness)
        self.server, self.health = server, health
        # [[collect]] tasks (docs/collect.md); on PostgreSQL also their worker processes
        self.collect = CollectService.open(ctx, self.config_path)
        self.collect.register(server)
        await server.start()
        self.collect.start()
        if node.health_listen:
            self.health_server, hport = await start_health_server(node.health_listen, health)
            log.info("health (plaintext) on port %d", hport)
        if node.metrics_listen:
            self.metrics_server, _ = await start_metrics_server(ctx, node.metrics_listen)
        if (publisher := Publisher.open(ctx)) is not None:
            self.publisher = publisher
            publisher.start()
        for name in ("", *SERVICE_NAMES):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self) -> None:
        """Stop serving gracefully: health first, then the server, tasks and publisher."""
        assert self.server is not None and self.health is not None and self.collect is not None
        log.info("node %s shutting down", self.ctx.name)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(GRACE_S)
        await self.collect.stop()
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics_server is not None:
            self.metrics_server.close()
            await self.metrics_server.wait_closed()
        if self.publisher is not None:
            await self.publisher.stop()  # one last round, then close the channels

    def close(self) -> None:
        """Close what was opened (also after a failed start)."""
        if self.witness is not None:
            self.witness.close()
        if self.collect is not None:
            self.collect.close()


async def _reload(ctx: NodeContext, path: Path) -> None:
    await reload_policy(ctx, path)


def _handle_signals(ctx: NodeContext, config_path: Path | None) -> asyncio.Event:
    """SIGINT/SIGTERM set the returned event; with ``config_path``, SIGHUP reloads policies."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if config_path is not None:

        def on_hup() -> None:
            task = loop.create_task(_reload(ctx, config_path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
    return stop


async def serve(
    config: NodeConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
    config_path: Path | None = None,
) -> None:
    """Run the node until SIGINT/SIGTERM, then stop gracefully and close the ledger.

    With ``config_path``, SIGHUP re-reads it and adopts its policies without a restart
    (:meth:`NodeContext.reload`, recorded in the ledger).
    """
    ctx = NodeContext.open(config)
    node = _Serving(ctx, config_path)
    crl = config.tls.crl
    try:
        if crl is not None:
            watch_crl(crl, ctx.tls.ca)
        port = await node.start()
        host = config.node.listen.rsplit(":", 1)[0]
        address = f"{host}:{port}"
        stop = _handle_signals(ctx, config_path)  # before READY: a stop then is graceful
        log.info("node %s serving on %s (mTLS required)", ctx.name, address)
        if on_ready is not None:
            on_ready(address)
        pid_file(config).write_text(f"{os.getpid()}\n")
        assert node.server is not None
        waiter = asyncio.create_task(node.server.wait_for_termination())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        await node.stop()
        waiter.cancel()
        stopper.cancel()
    finally:
        pid_file(config).unlink(missing_ok=True)
        if crl is not None:
            unwatch_crl(crl)
        node.close()
        ctx.fair.close()
        ctx.close()
