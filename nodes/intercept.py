"""Every call at a node from its headers on: a fair share, deadlines, each refusal recorded.

grpc.aio hands a call to the application when its headers arrive; for a method whose
request is one message, it then waits for that message before it calls the servicer --
for as long as the caller likes -- while ``maximum_concurrent_rpcs`` counts the call from
its headers. 64 calls whose message never came locked a node, and the refusals the
limit made were recorded nowhere (issue 17, class 7a).

:class:`CallGuard` is a server interceptor. It hands grpc the request-streaming twin of
every method, so that its own code runs as soon as the headers are in, with the
servicer context and through it the TLS peer certificate (``context.auth_context()``,
:func:`nodes.gate.certificate_identity`). For each call it then

1. takes a place for the requester in the call's class (:class:`nodes.fair.Admission`),
   in turn: ledger reads, witnessing and health checks by auditors, witnesses and nodes
   have places of their own (``node.reserved_requests``); everything else shares
   ``node.max_concurrent_requests``; nobody holds more than
   ``node.max_requests_per_requester`` places in either, and a requester's calls beyond
   that wait, at most ``node.max_waiting_per_requester`` of them. A waiting call reads
   nothing. The place is given back when grpc is done with the call -- its answer
   sent -- not when the servicer returns;
2. reads the request under ``node.request_timeout_s`` (a stream: each message within
   that time of the one before);
3. runs the servicer until ``node.call_timeout_s`` after the headers, whatever deadline
   the caller set.

A call refused for capacity (``RESOURCE_EXHAUSTED``: one waiting call too many) or cut by
a deadline (``DEADLINE_EXCEEDED``) is recorded as ``denied`` -- operation ``rpc``, the method in
its details, the requester whenever its certificate names one -- and aborted with that
status; nothing else happens to it. The refusals depend on load, time and identity only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from datafed.pki.ca import Identity
from datafed.proto.v1 import ledger_pb2
from nodes.context import NodeContext
from nodes.errors import DeadlineExceeded, InvalidRequest, NodeError, QuotaExceeded, status_of
from nodes.fair import ANALYSTS, RESERVED, Admission
from nodes.gate import Context, certificate_identity

__all__ = ["RESERVED_SERVICES", "CallGuard", "call_class"]

log = logging.getLogger("datafed.node")
T = TypeVar("T")
#: Services whose calls by auditors, witnesses and nodes use the reserved places.
RESERVED_SERVICES = frozenset(
    {
        ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    }
)
#: The requester of a call whose certificate names nobody (not a datafed certificate).
NOBODY = "unknown"


def call_class(method: str, identity: Identity | None) -> str:
    """The class of a call to ``method`` (``/package.Service/Method``) by ``identity``.

    Ledger reads, witnessing and health checks by anyone but an analyst are
    :data:`~nodes.fair.RESERVED`; analysts' calls, whatever the service, never are.
    """
    service = method.lstrip("/").split("/", 1)[0]
    if service in RESERVED_SERVICES and identity is not None and identity.role != "analyst":
        return RESERVED
    return ANALYSTS


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The interceptor of a node's server (see module docs)."""

    def __init__(self, ctx: NodeContext) -> None:
        node = ctx.config.node
        self.ctx = ctx
        self.admission = Admission(
            {ANALYSTS: node.max_concurrent_requests, RESERVED: node.reserved_requests},
            node.max_requests_per_requester,
            node.max_waiting_per_requester,
        )
        self.request_s = node.request_timeout_s
        self.call_s = node.call_timeout_s
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """The guarded twin of the method's handler (made once per method)."""
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]
        guarded = self._handlers.get(method)
        if guarded is None:
            guarded = self._handlers[method] = self._guard(method, handler)
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A request-streaming handler that runs ``handler``'s behaviour inside a :class:`_Call`."""
        inner = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
            raise TypeError(f"{method}: a node serves async handlers only")
        streaming = bool(handler.request_streaming)
        types = (handler.request_deserializer, handler.response_serializer)

        if handler.response_streaming:

            async def streams(requests: AsyncIterator[Any], context: Context) -> None:
                async with self._call(method, context) as call:
                    request = await call.request(requests, streaming)
                    await call.run(_write_all(inner, request, context))

            return grpc.stream_stream_rpc_method_handler(streams, *types)

        async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
            async with self._call(method, context) as call:
                request = await call.request(requests, streaming)
                return await call.run(inner(request, context))

        return grpc.stream_unary_rpc_method_handler(unary, *types)

    @asynccontextmanager
    async def _call(self, method: str, context: Context) -> AsyncIterator[_Call]:
        """Time one call and count its final status (:mod:`nodes.metrics`)."""
        start = time.monotonic()
        failed = True
        try:
            async with self._admitted(method, context) as call:
                yield call
            failed = False
        finally:
            self.ctx.metrics.call(method, _code(context, failed), time.monotonic() - start)

    @asynccontextmanager
    async def _admitted(self, method: str, context: Context) -> AsyncIterator[_Call]:
        """Admit one call from its headers; record and abort whatever cuts or refuses it."""
        call = _Call(self, method, context)
        try:
            slot = await call.run(self.admission.enter(call.klass, call.requester))
        except NodeError as exc:  # no place before the call's deadline
            await call.refuse(exc)
        if slot is None:
            await call.refuse(self._too_many(call))
        context.add_done_callback(lambda _: slot.release())  # once the answer is sent
        try:
            yield call
        except NodeError as exc:  # raised outside the servicer's own pipeline
            await call.refuse(exc)

    def _too_many(self, call: _Call) -> NodeError:
        node = self.ctx.config.node
        return QuotaExceeded(
            f"{call.requester} has {node.max_requests_per_requester} calls in flight and "
            f"{node.max_waiting_per_requester} waiting at this node, the most one requester "
            "may (node.max_requests_per_requester, node.max_waiting_per_requester)"
        )


def _code(context: Context, failed: bool) -> str:
    """The status a call ended with: the one it was aborted with, else OK or UNKNOWN."""
    try:
        code = context.code()
    except (AttributeError, RuntimeError):
        code = None
    if code is None or code == 0:
        return "UNKNOWN" if failed else "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    found = next((c.name for c in grpc.StatusCode if c.value[0] == code), None)
    return found or str(code)


class _Call:
    """One guarded call: who asked, its class and deadline, and how it is refused."""

    def __init__(self, guard: CallGuard, method: str, context: Context) -> None:
        self.guard, self.method, self.context = guard, method, context
        self.identity = certificate_identity(context)
        self.requester = str(self.identity) if self.identity is not None else NOBODY
        self.klass = call_class(method, self.identity)
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + guard.call_s

    def _request_s(self) -> float:
        return max(0.0, min(self.guard.request_s, self.deadline - self.loop.time()))

    async def request(self, requests: AsyncIterator[Any], streaming: bool) -> Any:
        """The request: its one message, or the stream of its messages, each in time."""
        if streaming:
            return _Paced(requests, self)
        message = await self.next_message(self.context.read())
        if message is grpc.aio.EOF:
            raise InvalidRequest("the call ended without its request message")
        return message

    async def next_message(self, read: Awaitable[T]) -> T:
        """``read`` under the request deadline (``node.request_timeout_s``)."""
        try:
            async with asyncio.timeout(self._request_s()) as timer:
                return await read
        except TimeoutError:
            if not timer.expired():
                raise
            raise DeadlineExceeded(
                f"the request did not arrive within {self.guard.request_s:g}s "
                "(node.request_timeout_s)"
            ) from None

    async def run(self, work: Awaitable[T]) -> T:
        """``work`` under the call's deadline (``node.call_timeout_s``)."""
        try:
            async with asyncio.timeout_at(self.deadline) as timer:
                return await work
        except TimeoutError:
            if not timer.expired():
                raise
            raise DeadlineExceeded(
                f"the call ran past this node's limit of {self.guard.call_s:g}s "
                "(node.call_timeout_s)"
            ) from None

    async def refuse(self, exc: NodeError) -> NoReturn:
        """Record ``exc`` as ``denied`` by this call's requester, then abort with its status."""
        code, message = status_of(exc)
        try:
            await self.guard.ctx.record(
                caller=self.identity,
                header=None,
                dataset="",
                operation="rpc",
                protection="",
                decision="denied",
                reason=f"{code.name}: {message}",
                request_digest="",
                details={"rpc": self.method},
            )
        except Exception:  # the refusal stands even if the ledger cannot take it
            log.exception("could not record the refusal of %s by %s", self.method, self.requester)
        await self.context.abort(code, message)
        raise AssertionError("unreachable")  # abort() always raises


class _Paced:
    """A call's request stream, each message within ``node.request_timeout_s`` of the last."""

    def __init__(self, messages: AsyncIterator[Any], call: _Call) -> None:
        self._messages, self._call = messages, call

    def __aiter__(self) -> _Paced:
        return self

    async def __anext__(self) -> Any:
        return await self._call.next_message(anext(self._messages))


async def _write_all(inner: Callable[..., Any], request: Any, context: Context) -> None:
    """Run a response-streaming behaviour, writing what an async generator yields."""
    if not inspect.isasyncgenfunction(inner):
        await inner(request, context)  # it writes with context.write itself
        return
    async with aclosing(inner(request, context)) as responses:
        async for response in responses:
            await context.write(response)
