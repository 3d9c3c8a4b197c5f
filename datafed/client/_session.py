"""The analyst's step session: signed ``ProtocolService.Step`` calls for one job.

Stepped protection modes drive their rounds through a :class:`ProtocolSession`; it signs
every step like a query (same requester, job and purpose, fresh nonce) over the job's
:class:`~datafed.client._transport.Transport`, checks that each reply belongs to the step
it answers and that its receipt proves the node logged it (one ``released`` entry,
against the node's CA-bound key), and reports failures through the transport's one error
map: :class:`~datafed.errors.NodeUnavailable` (a dropout) or
:class:`~datafed.errors.RemoteError` (a refusal).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client._query import QueryJob
from datafed.client._receipts import node_receipt
from datafed.client._transport import Transport
from datafed.errors import ProtocolError
from datafed.modes import SteppedMode, mode_class
from datafed.proto.v1 import protocol_pb2, protocol_pb2_grpc
from datafed.query.result import NodeReceipt

__all__ = ["CANCEL_ROUND", "ProtocolSession", "cancel_on_interrupt"]

#: The step round that cancels a job at a node (``nodes.query.steps.CANCEL_ROUND``).
CANCEL_ROUND = 0
#: How long a cancel may take per node (the analyst is waiting at a Ctrl-C).
CANCEL_TIMEOUT_S = 5.0


class ProtocolSession:
    """Signed steps of one job's stepped protection mode, to the job's nodes.

    Parameters
    ----------
    transport
        The job's transport (channels, signer, error map).
    job_id, mode, purpose, legal_basis
        As in the job's statement.
    binding
        Hex digest of the job statement (what the nodes bound their payloads to).
    keys
        Each node's pinned log key, to check step receipts.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        job_id: str,
        mode: str,
        purpose: str,
        binding: str,
        keys: Mapping[str, ed25519.Ed25519PublicKey],
        legal_basis: str = "",
    ) -> None:
        self.job_id = job_id
        self.mode = mode
        self.binding = binding
        self._transport = transport
        self._purpose = purpose
        self._legal_basis = legal_basis
        self._keys = keys
        #: The verified receipt of every step a node answered, in completion order.
        self.receipts: list[NodeReceipt] = []

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
        key = self._keys.get(node)
        if key is None:
            raise ProtocolError(f"no pinned log key for node {node!r}")
        t = self._transport
        signed = t.sign(
            protocol_pb2.StepRequestBody(
                header=t.header(node, self.job_id, self._purpose, self._legal_basis),
                mode=self.mode,
                round=round_,
                payload=payload,
            )
        )
        timeout = t.config.timeout_s
        reply: protocol_pb2.StepResponse = await t.call(
            node,
            lambda ch: protocol_pb2_grpc.ProtocolServiceStub(ch).Step(
                signed.request, timeout=timeout
            ),
        )
        if (reply.node, reply.job_id, reply.round) != (node, self.job_id, round_):
            raise ProtocolError(f"node {node!r} answered another step")
        self.receipts.append(
            node_receipt(
                node,
                key,
                reply.receipt if reply.HasField("receipt") else None,
                job_id=self.job_id,
                request_digests=[signed.digest],
                decisions=["released"],
                result_digest=hashlib.sha256(reply.payload).hexdigest(),
            )
        )
        return bytes(reply.payload)


async def cancel_job(
    transport: Transport, nodes: Sequence[str], job_id: str, mode: str, purpose: str,
    legal_basis: str = "",
) -> list[str]:  # fmt: skip
    """Ask ``nodes`` to drop the open job (round 0); return those that confirmed."""
    timeout = min(CANCEL_TIMEOUT_S, transport.config.timeout_s)

    async def one(node: str) -> None:
        signed = transport.sign(
            protocol_pb2.StepRequestBody(
                header=transport.header(node, job_id, purpose, legal_basis),
                mode=mode,
                round=CANCEL_ROUND,
            )
        )
        await transport.call(
            node,
            lambda ch: protocol_pb2_grpc.ProtocolServiceStub(ch).Step(
                signed.request, timeout=timeout
            ),
        )

    done = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
    return [n for n, r in zip(nodes, done, strict=True) if not isinstance(r, BaseException)]


@asynccontextmanager
async def cancel_on_interrupt(transport: Transport, job: QueryJob) -> AsyncIterator[None]:
    """Cancel a stepped mode's job at its nodes if the work inside is cancelled (Ctrl-C).

    ``asyncio.run`` turns Ctrl-C into a cancellation of its task: the nodes of a stepped
    mode hold the job open until its last step (counting against the requester's quota),
    so each is told to drop it before the cancellation goes on.
    """
    try:
        yield
    except asyncio.CancelledError:
        mode = job.protection.mode
        if issubclass(mode_class(mode), SteppedMode):
            nodes = [n.name for n in transport.config.nodes]
            await cancel_job(transport, nodes, job.job_id, mode, job.purpose, job.legal_basis)
        raise
