"""The node's ``GET /metrics`` endpoint: :mod:`nodes.metrics` rendered with the gauges read now.

Plain HTTP on ``node.metrics_listen`` (Prometheus text format 0.0.4); what it shows and
who may read it: :mod:`nodes.metrics` and docs/operator.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from datafed.modes import CKKS_CONTEXT_CACHE as CKKS_CACHE
from datafed.modes import PAILLIER_KEY_CACHE as KEY_CACHE
from nodes.context import NodeContext
from nodes.metrics import family, sample

__all__ = ["render", "start_metrics_server"]

log = logging.getLogger("datafed.node")
#: Largest HTTP request head the endpoint reads, and how long it waits for it.
_MAX_HEAD = 8192
_HEAD_TIMEOUT_S = 5.0


def _ledger_gauges(ctx: NodeContext) -> Iterator[str]:
    ledger = ctx.ledger
    size = ledger.head().size
    signed = ledger.signed_size
    lag = 0.0
    if signed < size:
        lag = max(0.0, time.time() - ledger.get_record(signed).time_ms / 1000)
    for name, value, text in (
        ("ledger_entries", size, "entries in this node's ledger"),
        ("ledger_unsigned_entries", size - signed, "entries no signed checkpoint covers yet"),
        ("ledger_signing_lag_seconds", lag, "age of the oldest entry not yet signed"),
    ):
        yield from family(name, "gauge", text)
        yield sample(name, {}, value)


def _budget_gauges(ctx: NodeContext) -> Iterator[str]:
    yield from family("dp_budget_epsilon", "gauge", "configured epsilon budget per dataset")
    rows = []
    for ds in ctx.config.datasets:
        dp = ds.policy.dp
        if dp is None:
            continue
        yield sample("dp_budget_epsilon", {"dataset": ds.name}, dp.budget_epsilon)
        spent = ctx.policy.budget.most_spent(ds.name)
        rows.append((ds.name, dp.budget_scope, max(0.0, dp.budget_epsilon - spent)))
    yield from family(
        "dp_budget_epsilon_left",
        "gauge",
        "epsilon left per dataset (scope requester: the least left to any one requester)",
    )
    for name, scope, left in rows:
        yield sample("dp_budget_epsilon_left", {"dataset": name, "scope": scope}, left)


def render(ctx: NodeContext) -> str:
    """The whole scrape: counters, histograms and the gauges read now."""
    from datafed import __version__

    lines = [*ctx.metrics.counters(), *_ledger_gauges(ctx), *_budget_gauges(ctx)]
    gauges = (
        ("open_jobs", len(ctx.jobs), "stepped jobs open at this node"),
        ("paillier_key_cache_bytes", KEY_CACHE.bytes, "analysts' Paillier key tables held"),
        (
            "paillier_key_cache_limit_bytes",
            ctx.config.limits.paillier_cache_bytes,
            "limits.paillier_cache_bytes",
        ),
        ("ckks_context_cache_bytes", CKKS_CACHE.held_bytes, "analysts' CKKS contexts held"),
        (
            "ckks_context_cache_limit_bytes",
            ctx.config.limits.ckks_cache_bytes,
            "limits.ckks_cache_bytes",
        ),
        ("start_time_seconds", ctx.metrics.started, "when this node started (Unix time)"),
    )
    for name, value, text in gauges:
        lines += [*family(name, "gauge", text), sample(name, {}, value)]
    lines += [*family("info", "gauge", "this node and its datafed version")]
    lines.append(sample("info", {"node": ctx.name, "version": __version__}, 1))
    return "\n".join(lines) + "\n"


async def _serve_one(
    ctx: NodeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        async with asyncio.timeout(_HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        parts = head[:_MAX_HEAD].split(b"\r\n", 1)[0].split()
        if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and parts[1] == b"/metrics":
            body = render(ctx).encode()
            status, kind = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, kind = b"only GET /metrics\n", b"404 Not Found", b"text/plain"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
            + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + (body if parts[:1] != [b"HEAD"] else b"")
        )  # fmt: skip
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        pass  # a scraper that went away or sent too much: nothing to answer
    finally:
        writer.close()


async def start_metrics_server(ctx: NodeContext, listen: str) -> tuple[asyncio.Server, int]:
    """Serve ``GET /metrics`` (plain HTTP) on ``listen``; return the server and its port."""
    host, port = listen.rsplit(":", 1)
    try:
        server = await asyncio.start_server(
            lambda r, w: _serve_one(ctx, r, w), host.strip("[]"), int(port), limit=_MAX_HEAD
        )
    except OSError as exc:
        raise OSError(f"cannot listen on node.metrics_listen {listen}: {exc}") from exc
    bound = server.sockets[0].getsockname()[1]
    log.info("metrics (plaintext HTTP) on %s:%d/metrics", host, bound)
    return server, int(bound)
