"""The collector's side: fetch closed windows from both aggregators, check, unshard.

A collector is an analyst with a ``fed.toml`` that lists both aggregators of a task. For
each window it asks the Leader and the Helper, concurrently and each with its own signed
request (each runs its own policy engine and charges its own budget), and trusts the
answer only when:

* each receipt verifies against that node's certificate key and proves this request's
  ``approved`` and ``released`` entries, the last one with the digest of the answer;
* each answer's close receipt proves the window's close entry at that node, and both
  entries are of the same close request (same report count and checksum at both),
  with the report count the answer gives;
* the two answers agree on the report count and checksum; without noise, each
  aggregate share hashes to the digest its close entry recorded.

Then the two shares are added and decoded (with noise: elements above ``p/2`` are
negative). Each aggregate share alone is uniformly random; only their sum means
anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client import FederationConfig, Transport, load_federation, node_receipt
from datafed.collect._task import TaskSpec
from datafed.collect._upload import DeviceTask, check_task
from datafed.collect._wire import answer_digest
from datafed.collect.errors import CollectError
from datafed.errors import RemoteError
from datafed.pki.ca import load_signing_key
from datafed.pki.tls import TlsMaterial, with_partners
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc
from datafed.query.result import NodeReceipt

__all__ = ["Collector", "Window", "WindowInfo"]


@dataclass(frozen=True)
class WindowInfo:
    """A closed window as listed by the Leader."""

    start: int
    duration: int
    releasable: bool


@dataclass(frozen=True)
class Window:
    """One released window: the aggregate, its counts and the proofs that came with it.

    Attributes
    ----------
    result : int or list of int
        The aggregate (Count, Sum: an integer; the vector variants: a list), with both
        aggregators' noise if the task has DP.
    report_count, rejected_count : int
        Verified reports aggregated; reports rejected in the window (Leader's count).
    rejected : dict
        Rejections by reason (``vdaf_verify_error``, ``hpke_decrypt_error``, ...).
    epsilon : dict
        Epsilon each aggregator charged for this release.
    noise_stddev : float
        Standard deviation of the noise per element (both aggregators' draws).
    receipts : tuple of NodeReceipt
        Both aggregators' receipts of this release, then of the window's close entry.
    """

    task: str
    start: int
    duration: int
    result: Any
    report_count: int
    rejected_count: int
    rejected: dict[str, int]
    epsilon: dict[str, float]
    noise_stddev: float
    receipts: tuple[NodeReceipt, ...]


class Collector:
    """Fetches a task's windows from its two aggregators (see module docs)."""

    def __init__(
        self, config: FederationConfig, tls: TlsMaterial, signing_key: ed25519.Ed25519PrivateKey
    ) -> None:
        self.config = config
        self._tls = tls
        self.transport = Transport(config, tls, signing_key)
        self._tasks: dict[str, DeviceTask] = {}

    @classmethod
    def from_file(cls, path: Path) -> Collector:
        """Load the analyst's ``fed.toml`` and keys."""
        config = load_federation(path)
        tls = with_partners(TlsMaterial.load(config.tls), config.partners)
        return cls(config, tls, load_signing_key(config.tls.signing_key))

    async def task(self, name: str) -> DeviceTask:
        """The task's parameters, from both aggregators, which must agree."""
        if name in self._tasks:
            return self._tasks[name]
        nodes = [n.name for n in self.config.nodes]

        async def ask(node: str) -> collect_pb2.GetTaskResponse | None:
            req = collect_pb2.GetTaskRequest(task=name)
            req.header.CopyFrom(self.transport.header(node, _job(), "collect"))
            signed = self.transport.sign(req).request
            try:
                return await self.transport.call(
                    node, lambda ch: collect_pb2_grpc.CollectServiceStub(ch).GetTask(signed)
                )
            except RemoteError as exc:
                if exc.code == "NOT_FOUND":  # this node does not aggregate the task
                    return None
                raise

        replies = dict(zip(nodes, await asyncio.gather(*(ask(n) for n in nodes)), strict=True))
        found = {n: r for n, r in replies.items() if r is not None}
        if not found:
            raise CollectError(f"no node of the federation file runs collection task {name!r}")
        checked = {n: check_task(r, self._tls.ca) for n, r in found.items()}
        first = next(iter(checked.values()))
        spec = first.spec
        for role in (spec.leader, spec.helper):
            if role not in checked:
                raise CollectError(f"task {name!r}: {role} is not in the federation file")
            if checked[role].spec.task_id != spec.task_id:
                raise CollectError(f"task {name!r}: its aggregators are configured differently")
        self._tasks[name] = first
        return first

    async def windows(self, task: str, *, purpose: str, since: int = 0) -> list[WindowInfo]:
        """The task's closed windows starting at or after ``since``, from the Leader."""
        spec = (await self.task(task)).spec
        req = collect_pb2.ListWindowsRequest(task=task, since=since)
        req.header.CopyFrom(self.transport.header(spec.leader, _job(), purpose))
        signed = self.transport.sign(req).request
        reply: collect_pb2.ListWindowsResponse = await self.transport.call(
            spec.leader, lambda ch: collect_pb2_grpc.CollectServiceStub(ch).ListWindows(signed)
        )
        return [WindowInfo(w.start, w.duration, w.releasable) for w in reply.windows]

    async def get(self, task: str, window: int, *, purpose: str, legal_basis: str = "") -> Window:
        """Fetch, check and unshard one closed window (refusals raise RemoteError)."""
        info = await self.task(task)
        spec, job = info.spec, _job()
        nodes = (spec.leader, spec.helper)
        keys = {spec.leader: info.leader.signing_key, spec.helper: info.helper.signing_key}

        async def one(
            node: str, ch: Any
        ) -> tuple[collect_pb2.GetWindowResponse, NodeReceipt, NodeReceipt]:
            req = collect_pb2.GetWindowRequest(task=task, window_start=window)
            req.header.CopyFrom(self.transport.header(node, job, purpose, legal_basis))
            signed = self.transport.sign(req)
            reply: collect_pb2.GetWindowResponse = await collect_pb2_grpc.CollectServiceStub(
                ch
            ).GetWindow(signed.request, timeout=self.config.timeout_s)
            return reply, *_check_answer(node, keys[node], reply, spec, window, job, signed.digest)

        answers = await self.transport.fan_out(nodes, one)
        return _combine(spec, answers)

    async def watch(
        self, task: str, *, purpose: str, since: int = 0, poll_s: float = 1.0
    ) -> AsyncIterator[Window | WindowInfo]:
        """Yield each window as it closes (``async for window in collector.watch(task)``).

        A releasable window comes as a :class:`Window`; one below the minimum batch size
        as its :class:`WindowInfo` (it is never released, so it is not fetched).
        """
        done: set[int] = set()
        while True:
            for w in await self.windows(task, purpose=purpose, since=since):
                if w.start in done:
                    continue
                done.add(w.start)
                yield await self.get(task, w.start, purpose=purpose) if w.releasable else w
            await asyncio.sleep(poll_s)

    collect = watch

    async def aclose(self) -> None:
        """Close the channels."""
        await self.transport.aclose()

    async def __aenter__(self) -> Collector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _job() -> str:
    return f"collect-{secrets.token_hex(8)}"


def _check_answer(
    node: str,
    key: ed25519.Ed25519PublicKey,
    reply: collect_pb2.GetWindowResponse,
    spec: TaskSpec,
    window: int,
    job: str,
    digest: str,
) -> tuple[NodeReceipt, NodeReceipt]:
    if (reply.node, bytes(reply.task_id), reply.window_start) != (node, spec.task_id, window):
        raise CollectError(f"node {node!r} answered for another node, task or window")
    release = node_receipt(
        node,
        key,
        reply.receipt,
        job_id=job,
        request_digests=[digest, digest],
        decisions=["approved", "released"],
        result_digest=answer_digest(reply),
    )
    close = node_receipt(
        node,
        key,
        reply.close_receipt,
        job_id=reply.close_job_id,
        request_digests=[reply.close_request_digest],
        decisions=["approved"],
        result_digest=reply.share_digest,
    )
    details = close.records[0].details
    # under noise the counts are private to the node (its close entry shows none; the
    # answer says 0): only the window is compared
    counted = (details.get("reports"), str(reply.report_count)) if not reply.noise else (0, 0)
    if details.get("window") != str(window) or counted[0] != counted[1]:
        raise CollectError(f"node {node!r}: the close entry is of another window or count")
    if not reply.noise and hashlib.sha256(reply.aggregate_share).hexdigest() != reply.share_digest:
        raise CollectError(f"node {node!r}: its aggregate share is not the one it ledgered")
    return release, close


def _combine(
    spec: TaskSpec, answers: list[tuple[collect_pb2.GetWindowResponse, NodeReceipt, NodeReceipt]]
) -> Window:
    (lead, r1, c1), (help_, r2, c2) = answers
    same = ("report_count", "checksum", "close_request_digest", "noise")
    if any(getattr(lead, f) != getattr(help_, f) for f in same):
        raise CollectError("the aggregators disagree on this window; it is not released")
    vdaf = spec.make_vdaf()
    merged = vdaf.merge(
        [
            vdaf.decode_agg_share(bytes(lead.aggregate_share)),
            vdaf.decode_agg_share(bytes(help_.aggregate_share)),
        ]
    )
    if lead.noise:  # noise can push an element below zero: read the field as signed
        p = vdaf.field.MODULUS
        merged = [x - p if x > p // 2 else x for x in merged]
    return Window(
        task=spec.name,
        start=lead.window_start,
        duration=lead.duration,
        result=vdaf.flp.decode(merged, lead.report_count),
        report_count=lead.report_count,
        rejected_count=lead.rejected_count,
        rejected=dict(lead.rejected),
        epsilon={lead.node: lead.epsilon, help_.node: help_.epsilon},
        noise_stddev=math.hypot(lead.noise_stddev, help_.noise_stddev),
        receipts=(r1, r2, c1, c2),
    )
