"""The call guard (nodes/intercept.py) on a real in-process gRPC server.

Plaintext loopback, so the certificate names nobody: every caller is the requester
``unknown``. What is checked: half-open calls are cut at the request deadline and do not
hold a place, a slow handler is cut at the call deadline, calls over a share are refused
at once, and every refusal is recorded as ``denied``; calls within bounds pass unchanged
whatever their shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from datafed.pki.ca import Identity
from nodes.config import NodeSection
from nodes.fair import ANALYSTS, RESERVED
from nodes.intercept import CallGuard, call_class
from nodes.metrics import Metrics

SERVICE = "test.Echo"


@dataclass
class FakeNode:
    """What the guard uses of a NodeContext: ``config.node``, ``record`` and ``metrics``."""

    node: NodeSection
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def config(self) -> FakeNode:
        return self

    async def record(self, **entry: Any) -> int:
        self.records.append(entry)
        return len(self.records) - 1


class Echo:
    """One method of each shape; ``hang`` waits until the test lets it go."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def unary(self, request: bytes, context: Any) -> bytes:
        return request

    async def hang(self, request: bytes, context: Any) -> bytes:
        await self.release.wait()
        return request

    async def fan_out(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield request + bytes([i])

    async def fan_in(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        return b"".join([r async for r in requests])

    async def writer(self, requests: AsyncIterator[bytes], context: Any) -> None:
        async for r in requests:
            await context.write(r.upper())


@pytest.fixture
async def served():
    """A server with the guard: 2 calls per requester and 1 waiting, 0.3 s per request,
    1 s per call."""
    node = NodeSection(
        name="water-north",
        max_concurrent_requests=4,
        max_requests_per_requester=2,
        max_waiting_per_requester=1,
        request_timeout_s=0.3,
        call_timeout_s=1.0,
    )
    fake, echo = FakeNode(node), Echo()
    guard = CallGuard(fake)  # type: ignore[arg-type]
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
        "Hang": grpc.unary_unary_rpc_method_handler(echo.hang),
        "FanOut": grpc.unary_stream_rpc_method_handler(echo.fan_out),
        "FanIn": grpc.stream_unary_rpc_method_handler(echo.fan_in),
        "Writer": grpc.stream_stream_rpc_method_handler(echo.writer),
    }
    server = grpc.aio.server(interceptors=[guard])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, fake, guard, echo
    finally:
        echo.release.set()
        await channel.close()
        await server.stop(0)


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


async def _until(cond, what: str) -> None:
    for _ in range(3000):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still waiting for {what}")


async def test_calls_of_every_shape_pass_unchanged(served):
    channel, fake, guard, _ = served
    assert await channel.unary_unary(_method("Unary"))(b"hi", timeout=10) == b"hi"
    out = [m async for m in channel.unary_stream(_method("FanOut"))(b"x", timeout=10)]
    assert out == [b"x\x00", b"x\x01", b"x\x02"]
    assert await channel.stream_unary(_method("FanIn"))(iter([b"a", b"b"]), timeout=10) == b"ab"
    out = [m async for m in channel.stream_stream(_method("Writer"))(iter([b"a", b"b"]))]
    assert out == [b"A", b"B"]
    assert fake.records == []
    await _until(lambda: guard.admission.in_flight(ANALYSTS) == 0, "the places to be given back")


async def test_a_half_open_call_is_cut_at_the_request_deadline(served):
    channel, fake, guard, _ = served
    half_open = channel.stream_unary(_method("Unary"))()  # headers only, never a message
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await half_open
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "node.request_timeout_s" in err.value.details()
    [entry] = fake.records
    assert entry["decision"] == "denied" and entry["operation"] == "rpc"
    assert entry["reason"].startswith("DEADLINE_EXCEEDED: the request did not arrive")
    assert entry["details"] == {"rpc": _method("Unary")} and entry["caller"] is None
    await _until(lambda: guard.admission.in_flight(ANALYSTS) == 0, "the place to be given back")


async def test_a_stalled_request_stream_is_cut(served):
    channel, fake, _, _ = served
    call = channel.stream_unary(_method("FanIn"))()
    await call.write(b"first")  # then nothing more, and no end of stream
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [e["reason"].split(":")[0] for e in fake.records] == ["DEADLINE_EXCEEDED"]


async def test_a_call_is_cut_at_the_call_deadline(served):
    channel, fake, guard, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(_method("Hang"))(b"x", timeout=60)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "node.call_timeout_s" in err.value.details()
    assert [e["reason"].split(":")[0] for e in fake.records] == ["DEADLINE_EXCEEDED"]
    await _until(lambda: guard.admission.in_flight(ANALYSTS) == 0, "the place to be given back")


async def test_a_call_over_the_share_waits_and_one_more_is_refused(served):
    channel, fake, guard, echo = served
    held = [channel.unary_unary(_method("Hang"))(b"x", timeout=60) for _ in range(2)]
    await _until(lambda: guard.admission.in_flight(ANALYSTS) == 2, "two calls in flight")
    waiting = channel.unary_unary(_method("Unary"))(b"w", timeout=60)
    await _until(lambda: guard.admission.waiting(ANALYSTS) == 1, "a call waiting")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(_method("Unary"))(b"y", timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "node.max_waiting_per_requester" in err.value.details()
    assert [e["reason"].split(":")[0] for e in fake.records] == ["RESOURCE_EXHAUSTED"]
    assert not waiting.done()
    echo.release.set()
    assert await asyncio.gather(*held) == [b"x", b"x"]
    assert await waiting == b"w"  # its turn came: served, not refused
    await _until(lambda: guard.admission.in_flight(ANALYSTS) == 0, "the places to be given back")
    assert len(fake.records) == 1


def _who(role: str) -> Identity:
    return Identity(role=role, name="x", signing_key=None)  # type: ignore[arg-type]


def test_ledger_and_health_calls_of_auditors_witnesses_and_nodes_are_reserved():
    ledger = "/datafed.proto.v1.LedgerService/GetCheckpoint"
    health = "/grpc.health.v1.Health/Check"
    for role in ("auditor", "witness", "node"):
        assert call_class(ledger, _who(role)) == RESERVED
        assert call_class(health, _who(role)) == RESERVED
    assert call_class(ledger, _who("analyst")) == ANALYSTS  # analysts never take them
    assert call_class(ledger, None) == ANALYSTS
    assert call_class("/datafed.proto.v1.QueryService/Query", _who("auditor")) == ANALYSTS
