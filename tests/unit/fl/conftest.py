"""Fixtures for FL tests: a flood-office federation's files and in-process node servers.

The node servers here are the real node code (``NodeContext`` + ``TrainingServicer``
with mTLS) on 127.0.0.1, run in a background event loop so the synchronous gRPC gateway
of the ClientApp can call them from the test thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from datafed import pki
from datafed.fl.local import FLOOD_PURPOSE, flood_node_specs, flood_policy
from datafed.local.federation import LocalFederation, NodeSpec
from datafed.pki.tls import TlsMaterial, server_credentials
from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.fl.servicer import TrainingServicer, add_training_service

PURPOSE = FLOOD_PURPOSE
POLICY = flood_policy()


def flood_specs(n: int = 3, seed: int = 7, policy: str = POLICY) -> list[NodeSpec]:
    """District flood offices, each with its own readings table."""
    return flood_node_specs(n, seed, policy)


@pytest.fixture(scope="session")
def flood_fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    """CA, certificates (alice, mallory from another CA is made per test), data, node.toml."""
    root = tmp_path_factory.mktemp("floodfed")
    return LocalFederation.create(root, flood_specs(), analysts=("alice", "bob"))


@dataclass
class InProcessNode:
    """A node's real services on 127.0.0.1 in a background event loop."""

    name: str
    address: str
    ctx: NodeContext
    servicer: TrainingServicer
    config: Path


class NodeRunner:
    """Start/stop in-process node servers (TrainingService only) on a private loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[tuple[grpc.aio.Server, NodeContext]] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self, config: Path) -> InProcessNode:
        cfg = load_node_config(config)

        async def boot() -> tuple[grpc.aio.Server, int, NodeContext, TrainingServicer]:
            ctx = NodeContext.open(cfg)
            server = grpc.aio.server()
            servicer = add_training_service(server, ctx)
            port = server.add_secure_port("127.0.0.1:0", server_credentials(ctx.tls))
            await server.start()
            return server, port, ctx, servicer

        server, port, ctx, servicer = self.run(boot())
        self.servers.append((server, ctx))
        return InProcessNode(cfg.node.name, f"127.0.0.1:{port}", ctx, servicer, config)

    def close(self) -> None:
        for server, ctx in self.servers:
            self.run(server.stop(0))
            ctx.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def runner() -> Iterator[NodeRunner]:
    r = NodeRunner()
    try:
        yield r
    finally:
        r.close()


def node_tls(fed: LocalFederation, name: str) -> TlsMaterial:
    """The TLS material a party would present (from the federation's PKI)."""
    files = pki.party_paths(fed.pki_dir, "node", name)
    from datafed.pki.tls import PartyFiles

    return TlsMaterial.load(
        PartyFiles(
            ca=fed.pki_dir / "ca.crt", cert=files.cert, key=files.key, signing_key=files.signing_key
        )
    )
