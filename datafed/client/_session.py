"""The analyst's step session: signed ``ProtocolService.Step`` calls for one job.

Multi-step protection modes drive their rounds through a :class:`ProtocolSession`; it
signs every step like a query (same requester, job and purpose, fresh nonce), keeps one
mTLS channel per node, checks that each reply belongs to the step it answers and that
its receipt proves the node logged it (against the node's CA-bound key), and
translates gRPC failures into :class:`~datafed.errors.NodeUnavailable` (a dropout) or
:class:`~datafed.errors.RemoteError` (a refusal).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from types import TracebackType

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from audit.errors import InvalidReceipt
from audit.receipt_serde import receipt_from_proto
from audit.receipts import verify_receipt
from datafed.client._receipts import ledger_origin
from datafed.client.config import FederationConfig
from datafed.errors import NodeUnavailable, ProtocolError, RemoteError
from datafed.proto.v1 import common_pb2, protocol_pb2, protocol_pb2_grpc, query_pb2
from datafed.query.components import Component
from datafed.query.modes import Combined, NodeAnswer, ProtectionMode
from datafed.query.result import NodeReceipt
from datafed.serde import header_to_proto
from datafed.signing import new_header, sign_body
from datafed.tls import TlsMaterial, channel_credentials

__all__ = ["ProtocolSession", "check_step_receipt", "finish_steps"]

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def check_step_receipt(
    node: str,
    key: ed25519.Ed25519PublicKey,
    job: str,
    request_digest: str,
    reply: protocol_pb2.StepResponse,
) -> NodeReceipt:
    """Verify a step's receipt: one ``released`` entry of this node, job, request and reply.

    Raises
    ------
    ProtocolError
        Naming the node, if the receipt does not verify or does not match the step.
    """
    try:
        receipt = receipt_from_proto(reply.receipt)
        records = verify_receipt(receipt, ledger_origin(node), key)
    except (InvalidReceipt, ValueError) as exc:
        raise ProtocolError(f"node {node!r}: step receipt does not verify") from exc
    ok = (
        [r.decision for r in records] == ["released"]
        and records[0].node == node
        and records[0].job_id == job
        and records[0].request_digest == request_digest
        and records[0].result_digest == hashlib.sha256(reply.payload).hexdigest()
    )
    if not ok:
        raise ProtocolError(f"node {node!r}: step receipt does not match the step")
    return NodeReceipt(node=node, checkpoint=receipt.checkpoint, records=tuple(records))


class ProtocolSession:
    """Signed steps of one job's protection mode, to the federation's nodes."""

    def __init__(
        self,
        config: FederationConfig,
        tls: TlsMaterial,
        signing_key: ed25519.Ed25519PrivateKey,
        *,
        job_id: str,
        mode: str,
        purpose: str,
        legal_basis: str = "",
        keys: Mapping[str, ed25519.Ed25519PublicKey] | None = None,
    ) -> None:
        self.job_id = job_id
        self.mode = mode
        self._config = config
        self._tls = tls
        self._key = signing_key
        self._purpose = purpose
        self._legal_basis = legal_basis
        self._endpoints = {n.name: n for n in config.nodes}
        self._stubs: dict[str, protocol_pb2_grpc.ProtocolServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        #: Each node's pinned log key; without it, step receipts are not checked.
        self._keys = keys
        #: The verified receipt of every step a node answered, in completion order.
        self.receipts: list[NodeReceipt] = []

    def _stub(self, node: str) -> protocol_pb2_grpc.ProtocolServiceStub:
        stub = self._stubs.get(node)
        if stub is None:
            endpoint = self._endpoints.get(node)
            if endpoint is None:
                raise ProtocolError(f"no node called {node!r} in this federation")
            channel = grpc.aio.secure_channel(
                endpoint.address,
                channel_credentials(self._tls),
                options=[
                    ("grpc.ssl_target_name_override", node),
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
            )
            self._channels.append(channel)
            stub = self._stubs[node] = protocol_pb2_grpc.ProtocolServiceStub(channel)
        return stub

    async def step(self, node: str, round_: int, payload: bytes) -> bytes:
        """Send step ``round_`` to ``node``; return its reply payload.

        Raises
        ------
        NodeUnavailable
            The node could not be reached in time (it dropped out).
        RemoteError
            The node refused the step; names the node and the status.
        ProtocolError
            The reply does not belong to this step, or its receipt does not verify.
        """
        stub = self._stub(node)
        header = new_header(
            self._config.analyst, node, self.job_id, self._purpose, self._legal_basis
        )
        body = protocol_pb2.StepRequestBody(
            header=header_to_proto(header), mode=self.mode, round=round_, payload=payload
        ).SerializeToString()
        request = common_pb2.SignedRequest(body=body, signature=sign_body(body, self._key))
        try:
            reply: protocol_pb2.StepResponse = await stub.Step(
                request, timeout=self._config.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _UNAVAILABLE:
                raise NodeUnavailable(node, code.name, "dropped out of the protocol") from exc
            raise RemoteError(node, code.name, exc.details() or "") from exc
        if (reply.node, reply.job_id, reply.round) != (node, self.job_id, round_):
            raise ProtocolError(f"node {node!r} answered another step")
        if self._keys is not None:
            digest = hashlib.sha256(body).hexdigest()
            key = self._keys.get(node)
            if key is None:
                raise ProtocolError(f"no pinned log key for node {node!r}")
            self.receipts.append(check_step_receipt(node, key, self.job_id, digest, reply))
        return bytes(reply.payload)

    async def aclose(self) -> None:
        """Close every channel."""
        channels, self._channels, self._stubs = self._channels, [], {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> ProtocolSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def finish_steps(
    session: ProtocolSession,
    mode: ProtectionMode,
    answers: Sequence[query_pb2.QueryResponse],
    comps: Sequence[Component],
    n_groups: int,
    bits: int,
) -> Combined:
    """Run a multi-step mode's remaining steps over ``session``, then close it."""
    async with session:
        return await mode.finish(
            session, [NodeAnswer(a.node, bytes(a.payload)) for a in answers], comps, n_groups, bits
        )
