"""The analyst's one transport: pooled mTLS channels, signed requests, one error map.

Every client call -- node info, queries, sign-offs, protocol steps, intersection-sum
steps -- goes through a :class:`Transport`: one channel per node for the transport's life
(a query, a job), requests built and signed in one place, and gRPC failures translated by
one map (:func:`map_errors`, in the manner of httpx's ``map_exceptions``):

=====================================  ==============================================
gRPC status                            datafed error
=====================================  ==============================================
UNAVAILABLE, DEADLINE_EXCEEDED         :class:`~datafed.errors.NodeUnavailable`
any other                              :class:`~datafed.errors.RemoteError`
=====================================  ==============================================
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import Message

from datafed.client.config import FederationConfig, NodeEndpoint
from datafed.errors import (
    DatafedError,
    NodeNameMismatch,
    NodeUnavailable,
    QueryError,
    RemoteError,
)
from datafed.pki.tls import TlsMaterial, channel_credentials
from datafed.proto.v1 import common_pb2
from datafed.wire.serde import header_to_proto
from datafed.wire.signing import new_header, sign_body

__all__ = ["MAX_MESSAGE_BYTES", "SignedBody", "Transport", "map_errors"]

T = TypeVar("T")
#: Largest message the client sends or accepts (nodes enforce their own limit).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
#: What gRPC's TLS says when the peer's certificate is for another name (by version).
_PEER_NAME = ("not in peer certificate", "Hostname Verification Check failed")


@contextmanager
def map_errors(node: NodeEndpoint, timeout_s: float) -> Iterator[None]:
    """Translate a gRPC failure of a call to ``node`` into the datafed error tree."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code in _UNAVAILABLE:
            reason = (
                f"no answer from {node.address} within {timeout_s:g}s"
                if code == grpc.StatusCode.DEADLINE_EXCEEDED
                else f"cannot reach {node.address}: {_short(exc.details())}"
            )
            raise NodeUnavailable(node.name, code.name, reason) from exc
        raise RemoteError(node.name, code.name, exc.details() or "") from exc


def _short(text: str | None) -> str:
    return text.splitlines()[0][:200] if text else "unavailable"


class SignedBody:
    """A signed request ready to send, with the digest the node will record."""

    def __init__(self, body: bytes, key: ed25519.Ed25519PrivateKey) -> None:
        self.request = common_pb2.SignedRequest(body=body, signature=sign_body(body, key))
        #: Hex SHA-256 of the signed body: the ``request_digest`` of the node's entries.
        self.digest = hashlib.sha256(body).hexdigest()


class Transport:
    """Channels to the federation's nodes and approvers, and the analyst's request signer.

    Parameters
    ----------
    config
        The federation file (addresses, analyst name, timeout).
    tls
        The analyst's certificate, key and CA.
    signing_key
        The Ed25519 key bound in the analyst's certificate.
    """

    def __init__(
        self,
        config: FederationConfig,
        tls: TlsMaterial,
        signing_key: ed25519.Ed25519PrivateKey,
    ) -> None:
        self.config = config
        self._tls = tls
        self._key = signing_key
        self._endpoints = {e.name: e for e in (*config.approvers, *config.nodes)}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._creds: grpc.ChannelCredentials | None = None

    def endpoint(self, node: str) -> NodeEndpoint:
        """The endpoint called ``node``; QueryError if the federation file has none."""
        try:
            return self._endpoints[node]
        except KeyError:
            raise QueryError(f"node {node!r} is not in the federation file") from None

    def channel(self, node: str) -> grpc.aio.Channel:
        """The channel to ``node``, opened on first use and kept until :meth:`aclose`."""
        ch = self._channels.get(node)
        if ch is None:
            if self._creds is None:
                self._creds = channel_credentials(self._tls)
            ch = self._channels[node] = self.open_channel(self.endpoint(node), self._creds)
        return ch

    def open_channel(
        self, endpoint: NodeEndpoint, creds: grpc.ChannelCredentials
    ) -> grpc.aio.Channel:
        """Open one mTLS channel (the node's name is checked against its certificate)."""
        return grpc.aio.secure_channel(
            endpoint.address,
            creds,
            options=[
                ("grpc.ssl_target_name_override", endpoint.name),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )

    def header(
        self, node: str, job_id: str, purpose: str, legal_basis: str = ""
    ) -> common_pb2.RequestHeader:
        """A fresh request header (new nonce, validity window from now) for ``node``."""
        h = new_header(self.config.analyst, node, job_id, purpose, legal_basis)
        return header_to_proto(h)

    def sign(self, body: Message | bytes) -> SignedBody:
        """Sign a request body (a message, serialized here, or its exact bytes)."""
        raw = body if isinstance(body, bytes) else body.SerializeToString()
        return SignedBody(raw, self._key)

    async def call(self, node: str, rpc: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        """Run ``rpc`` on ``node``'s channel with the one error map.

        A node whose certificate names another node is reported as such
        (:class:`~datafed.errors.NodeNameMismatch`), not as unreachable.
        """
        endpoint = self.endpoint(node)
        try:
            with map_errors(endpoint, self.config.timeout_s):
                return await rpc(self.channel(node))
        except NodeUnavailable as exc:
            cause = exc.__cause__
            details = cause.details() or "" if isinstance(cause, grpc.aio.AioRpcError) else ""
            if any(p in details for p in _PEER_NAME):
                raise await self._mismatch(endpoint) from exc
            raise

    async def _mismatch(self, endpoint: NodeEndpoint) -> DatafedError:
        """The error for a node whose certificate is not for ``endpoint.name``."""
        from datafed.client.probe import peer_identity

        try:
            who = await asyncio.to_thread(
                peer_identity, endpoint.address, self._tls, self.config.timeout_s
            )
        except DatafedError as exc:
            return NodeNameMismatch(
                endpoint.name, f"the node at {endpoint.address} is not {endpoint.name!r}: {exc}"
            )
        return NodeNameMismatch(
            endpoint.name,
            f"the node at {endpoint.address} is {who.name!r}, not {endpoint.name!r} (its "
            f"certificate names {who}): fix the node's name or address in the federation "
            "file (datafed init writes the names the certificates hold)",
        )

    async def fan_out(
        self, nodes: Sequence[str], rpc: Callable[[str, grpc.aio.Channel], Awaitable[T]]
    ) -> list[T]:
        """Call every node concurrently; raise the first failure (counting the others)."""

        async def one(node: str) -> T:
            return await self.call(node, lambda ch: rpc(node, ch))

        results: list[Any] = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            first = errors[0]
            if len(errors) > 1 and isinstance(first, RemoteError):
                first.args = (f"{first.args[0]} (and {len(errors) - 1} more node(s) failed)",)
            raise first
        return results

    async def aclose(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(ch.close() for ch in channels))

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
