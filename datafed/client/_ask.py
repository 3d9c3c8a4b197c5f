"""One node's signed Query, resent once with the mode's attachment if the node asks for it.

A mode may name key material by its digest in the params (``ckks``: the analyst's public
context, 0.4-0.5 MB) and send it beside them only to nodes that may not hold it
(:meth:`~datafed.modes.ProtectionMode.attachment`). A node that does not hold it refuses
before admission with ``FAILED_PRECONDITION`` (nothing charged, a ``denied`` entry in its
ledger); the query is then signed again, with a fresh header, and sent with it. The job
statement is the same, so the node admits the job as it would have the first time.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from datafed.client._transport import Transport
from datafed.modes import ProtectionMode
from datafed.proto.v1 import query_pb2, query_pb2_grpc

__all__ = ["ask_node"]


async def ask_node(
    transport: Transport,
    node: str,
    ch: grpc.aio.Channel,
    mode: ProtectionMode,
    body: Callable[[bytes], query_pb2.QueryRequestBody],
    timeout: float,
) -> tuple[query_pb2.QueryResponse, str]:
    """Send ``node`` the query ``body(attachment)``; return its answer and the request's digest."""
    stub = query_pb2_grpc.QueryServiceStub(ch)
    attached = mode.attachment(node)
    while True:
        signed = transport.sign(body(attached))  # a fresh header (nonce) every time
        try:
            reply: query_pb2.QueryResponse = await stub.Query(signed.request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or attached:
                raise
            attached = mode.attachment(node, needed=True)
            if not attached:
                raise
            continue
        mode.answered(node)
        return reply, signed.digest
