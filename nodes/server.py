"""The agency node's gRPC server: mTLS required, health checking, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from audit.witness import WitnessStore
from datafed.proto.v1 import query_pb2, query_pb2_grpc
from datafed.tls import server_credentials
from nodes.config import NodeConfig
from nodes.context import NodeContext
from nodes.ledger_servicer import add_ledger_services
from nodes.limits import install as install_limits
from nodes.protocol_servicer import add_protocol_service
from nodes.psi_servicer import add_psi_service
from nodes.publish import Publisher, open_witness_store
from nodes.query_servicer import QueryServicer
from nodes.training_servicer import add_training_service

__all__ = ["SERVICE_NAMES", "build_server", "serve"]

log = logging.getLogger("datafed.node")
SERVICE_NAMES = (query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,)
GRACE_S = 5.0


async def build_server(
    ctx: NodeContext, witness: WitnessStore | None = None
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """Create the server with every service registered; return it and its bound port."""
    install_limits(ctx)  # [limits]: job quotas, Paillier key cache (docs/policy.md#limits)
    limit = ctx.config.node.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
        maximum_concurrent_rpcs=ctx.config.node.max_concurrent_requests,
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


async def serve(config: NodeConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM, then stop gracefully and close the ledger."""
    ctx = NodeContext.open(config)
    witness = publisher = None
    try:
        witness = open_witness_store(ctx)
        server, port, health = await build_server(ctx, witness)
        await server.start()
        if (publisher := Publisher.open(ctx)) is not None:
            publisher.start()
        for name in ("", *SERVICE_NAMES):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = config.node.listen.rsplit(":", 1)[0]
        address = f"{host}:{port}"
        log.info("node %s serving on %s (mTLS required)", ctx.name, address)
        if on_ready is not None:
            on_ready(address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(server.wait_for_termination())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        log.info("node %s shutting down", ctx.name)
        await health.enter_graceful_shutdown()
        await server.stop(GRACE_S)
        if publisher is not None:
            await publisher.stop()  # one last round, then close the channels
        waiter.cancel()
        stopper.cancel()
    finally:
        if witness is not None:
            witness.close()
        ctx.close()
