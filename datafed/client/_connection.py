"""The analyst's connection to a federation: its files, one transport per job, node info.

:class:`Connection` holds what every job of the analyst needs -- the federation file, the
analyst's TLS material and signing key -- opens a :class:`~datafed.client._transport.Transport`
per job and asks the nodes who they are. :class:`~datafed.client.federation.Federation`
adds queries and intersection-sums on top; the intersection-sum relay
(:mod:`datafed.client.psi`) needs only this connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client._transport import Transport
from datafed.client.config import FederationConfig
from datafed.client.nodeinfo import NodeInfo, NodeStatus, node_info_from_proto
from datafed.client.progress import CURRENT, reported
from datafed.errors import DatafedError, PkiError, ProtocolError
from datafed.pki.files import load_signing_key
from datafed.pki.peers import verify_peer
from datafed.pki.tls import TlsMaterial, with_partners
from datafed.proto.v1 import query_pb2, query_pb2_grpc

__all__ = ["Connection", "run_sync"]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop.

    Outside an event loop this is :func:`asyncio.run`.  Inside one (a Jupyter cell runs
    in the kernel's loop) a second ``asyncio.run`` would fail and nesting loops is
    unsafe, so the coroutine runs on a private loop in a worker thread while the caller
    waits; ``await fed.aquery(...)`` is the form that keeps the caller's loop free.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="datafed") as pool:
        return pool.submit(asyncio.run, coro).result()


class Connection:
    """The analyst's files and node info: what every job of the analyst starts from.

    Parameters
    ----------
    config
        The federation file's contents (see :mod:`datafed.client.config`).
    """

    def __init__(self, config: FederationConfig) -> None:
        self.config = config
        self._tls = with_partners(TlsMaterial.load(config.tls), config.partners)
        self._signing_key = load_signing_key(config.tls.signing_key)

    def transport(self) -> Transport:
        """A transport (pooled channels, signer, error map) for one job; close it after."""
        return Transport(self.config, self._tls, self._signing_key)

    def node_info(self) -> list[NodeInfo]:
        """Ask every node for its datasets, declared group values and ledger head."""
        return run_sync(self.anode_info())

    async def anode_info(self) -> list[NodeInfo]:
        """Async form of :meth:`node_info` (fails if a node does not answer)."""
        async with self.transport() as transport:
            return await self._infos(transport)

    def discover(self) -> list[NodeStatus]:
        """Every node's datasets, typed columns and what this analyst may do there.

        A node that does not answer is listed with the reason instead of failing the
        call (``datafed nodes``).
        """
        return run_sync(self.adiscover())

    async def adiscover(self) -> list[NodeStatus]:
        """Async form of :meth:`discover`."""
        timeout = self.config.timeout_s

        async def one(transport: Transport, node: str, address: str) -> NodeStatus:
            async def rpc(ch: grpc.aio.Channel) -> query_pb2.NodeInfoResponse:
                return await query_pb2_grpc.QueryServiceStub(ch).NodeInfo(  # type: ignore[no-any-return]
                    query_pb2.NodeInfoRequest(), timeout=timeout
                )

            try:
                reply = await transport.call(node, rpc)
            except DatafedError as exc:
                return NodeStatus(node, address, None, str(exc))
            if reply.node != node:
                return NodeStatus(node, address, None, f"answers as {reply.node!r}")
            return NodeStatus(node, address, node_info_from_proto(reply))

        async with self.transport() as transport:
            return list(
                await asyncio.gather(
                    *(one(transport, n.name, n.address) for n in self.config.nodes)
                )
            )

    async def _infos(self, transport: Transport) -> list[NodeInfo]:
        timeout = self.config.timeout_s

        @reported(CURRENT.get(), "node info")
        async def one(node: str, ch: grpc.aio.Channel) -> query_pb2.NodeInfoResponse:
            reply: query_pb2.NodeInfoResponse = await query_pb2_grpc.QueryServiceStub(ch).NodeInfo(
                query_pb2.NodeInfoRequest(), timeout=timeout
            )
            if reply.node != node:
                address = transport.endpoint(node).address
                raise ProtocolError(f"node at {address} calls itself {reply.node!r}, not {node!r}")
            return reply

        answers = await transport.fan_out([n.name for n in self.config.nodes], one)
        return [node_info_from_proto(a) for a in answers]

    def _log_keys(self, infos: Sequence[NodeInfo]) -> dict[str, ed25519.Ed25519PublicKey]:
        """Each node's log key, from the certificate it presented, verified against our CA."""
        keys = {}
        for info in infos:
            try:
                identity = verify_peer(info.certificate_pem, self._tls.ca)
            except PkiError as exc:
                raise ProtocolError(f"node {info.node!r}: {exc}") from exc
            if identity.name != info.node:
                raise ProtocolError(f"node {info.node!r} presents {identity}'s certificate")
            keys[info.node] = identity.signing_key
        return keys
