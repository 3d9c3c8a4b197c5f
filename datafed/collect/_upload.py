"""The device and gateway side: shard, seal, upload in batches, retry with the same IDs.

A gateway (certificate role ``gateway``) holds a small config file::

    gateway = "gw-north"
    timeout_s = 30

    [tls]
    ca = "pki/ca.crt"
    cert = "pki/gateway/gw-north.crt"
    key = "pki/gateway/gw-north.key"
    signing_key = "pki/gateway/gw-north.ed25519"

    [leader]
    name = "water-north"
    address = "10.0.0.1:50051"

and uploads through :class:`Uploader`::

    up = Uploader.from_file(Path("gateway.toml"))
    task = await up.task("water-use")             # parameters from the Leader, checked
    reports = task.shard_many([(m, t) for m, t in readings])
    result = await up.upload(task, reports)       # batches, retries, a status per report

:meth:`Uploader.task` trusts the Leader for nothing it cannot check: both certificates
must be issued by the federation CA to the nodes the parameters name (the Helper's key
is the one its share is sealed to; a Leader handing out its own certificate as the
Helper's is caught by the name), and the task ID is recomputed from the parameters.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field

from datafed.client import FederationConfig, NodeEndpoint, Transport
from datafed.collect._seal import ReportBinding, seal_shares
from datafed.collect._task import TaskSpec
from datafed.collect._wire import SealedReport, spec_from_proto
from datafed.collect.errors import CollectError
from datafed.config.load import load_toml_model
from datafed.errors import NodeUnavailable, PkiError
from datafed.pki.ca import Identity, load_signing_key
from datafed.pki.identity import PARTY_NAME_PATTERN
from datafed.pki.peers import verify_peer, x25519_public
from datafed.pki.tls import PartyFiles, ResolvedPath, TlsMaterial, with_partners
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc
from datafed.protocols import CollectTask, Report, shard_report

__all__ = ["DeviceTask", "GatewayConfig", "UploadResult", "Uploader"]

STATUS_NAMES = {v: k.lower() for k, v in collect_pb2.ReportStatus.items()}


class GatewayConfig(BaseModel):
    """A gateway's (or device's) file: its name, TLS files and the Leader to upload to."""

    model_config = ConfigDict(extra="forbid")

    gateway: str = Field(pattern=PARTY_NAME_PATTERN)
    tls: PartyFiles
    leader: NodeEndpoint
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: Trust bundles of partner federations (``datafed pki bundle``): a Leader of a
    #: partner city is checked against them (docs/federation.md).
    partners: list[ResolvedPath] = []


@dataclass(frozen=True)
class DeviceTask:
    """A task as a device sees it: parameters checked, the Helper's key to seal to."""

    spec: TaskSpec
    task: CollectTask
    #: The Helper's X25519 key (from the Ed25519 key in its certificate).
    helper_key: bytes
    leader: Identity
    helper: Identity

    def seal(self, reports: Sequence[Report]) -> list[SealedReport]:
        """Seal each report's Helper share (one key agreement for the batch)."""
        tid = self.spec.task_id
        items = [
            (ReportBinding(tid, r.report_id, r.time, r.public_share), r.helper_share)
            for r in reports
        ]
        sealed = seal_shares(self.helper_key, items)
        return [
            SealedReport(r.report_id, r.time, r.public_share, r.leader_share, h)
            for r, h in zip(reports, sealed, strict=True)
        ]

    def shard_many(self, items: Sequence[tuple[Any, int]]) -> list[SealedReport]:
        """Shard ``(measurement, time)`` pairs into sealed reports (fresh IDs, randomness)."""
        return self.seal([shard_report(self.task, m, t) for m, t in items])

    def shard(self, measurement: Any, time: int) -> SealedReport:
        """One measurement into one sealed report."""
        return self.shard_many([(measurement, time)])[0]


@dataclass(frozen=True)
class UploadResult:
    """Statuses of an upload, one per report in order (``accepted``, ``duplicate``, ...).

    ``batch_seconds``: how long each upload request took, retries included.
    """

    statuses: tuple[str, ...]
    batch_seconds: tuple[float, ...] = ()

    @property
    def accepted(self) -> int:
        """Reports the Leader holds (accepted now or by an earlier try)."""
        return sum(s in ("accepted", "duplicate") for s in self.statuses)

    @property
    def refused(self) -> Counter[str]:
        """Refused reports by status."""
        return Counter(s for s in self.statuses if s not in ("accepted", "duplicate"))


class Uploader:
    """Uploads reports to a task's Leader over mTLS, signed (see module docs)."""

    def __init__(
        self, config: GatewayConfig, tls: TlsMaterial, signing_key: ed25519.Ed25519PrivateKey
    ) -> None:
        self.config = config
        self._tls = tls
        fed = FederationConfig(
            analyst=config.gateway,
            tls=config.tls,
            nodes=[config.leader],
            timeout_s=config.timeout_s,
        )
        self.transport = Transport(fed, tls, signing_key)

    @classmethod
    def from_file(cls, path: Path) -> Uploader:
        """Load a gateway file and its keys."""
        config = load_toml_model(path, GatewayConfig)
        tls = with_partners(TlsMaterial.load(config.tls), config.partners)
        return cls(config, tls, load_signing_key(config.tls.signing_key))

    @property
    def leader(self) -> str:
        """The Leader's name."""
        return self.config.leader.name

    async def task(self, name: str) -> DeviceTask:
        """Fetch a task's parameters from the Leader and check them (see module docs)."""
        req = collect_pb2.GetTaskRequest(task=name)
        req.header.CopyFrom(self.transport.header(self.leader, _job("task"), "collect-upload"))
        signed = self.transport.sign(req).request
        reply: collect_pb2.GetTaskResponse = await self.transport.call(
            self.leader, lambda ch: collect_pb2_grpc.CollectServiceStub(ch).GetTask(signed)
        )
        return check_task(reply, self._tls.ca, leader=self.leader)

    async def upload(
        self,
        task: DeviceTask,
        reports: Sequence[SealedReport],
        *,
        batch: int = 500,
        concurrency: int = 4,
        retries: int = 5,
    ) -> UploadResult:
        """Upload in batches; a batch whose answer is lost is resent as is (same report IDs).

        Raises
        ------
        datafed.errors.NodeUnavailable
            The Leader stayed unreachable through every retry.
        datafed.errors.RemoteError
            The Leader refused the upload itself (e.g. this gateway may not upload).
        """
        gate = asyncio.Semaphore(concurrency)
        chunks = [reports[i : i + batch] for i in range(0, len(reports), batch)]

        async def one(chunk: Sequence[SealedReport]) -> tuple[list[str], float]:
            async with gate:
                start = time.perf_counter()
                for attempt in range(retries + 1):
                    try:
                        return await self._send(task, chunk), time.perf_counter() - start
                    except NodeUnavailable:
                        if attempt == retries:
                            raise
                        await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
            raise AssertionError("unreachable")

        parts = await asyncio.gather(*(one(c) for c in chunks))
        statuses = tuple(s for part, _ in parts for s in part)
        return UploadResult(statuses, tuple(t for _, t in parts))

    async def _send(self, task: DeviceTask, chunk: Sequence[SealedReport]) -> list[str]:
        req = collect_pb2.UploadRequest(task=task.spec.name)
        req.reports.extend(r.to_proto() for r in chunk)
        req.header.CopyFrom(self.transport.header(self.leader, _job("upload"), "collect-upload"))
        signed = self.transport.sign(req).request
        reply: collect_pb2.UploadResponse = await self.transport.call(
            self.leader, lambda ch: collect_pb2_grpc.CollectServiceStub(ch).Upload(signed)
        )
        if len(reply.statuses) != len(chunk):
            raise CollectError(
                f"{self.leader} answered {len(reply.statuses)} statuses for {len(chunk)} reports"
            )
        return [STATUS_NAMES.get(s, "unknown") for s in reply.statuses]

    async def aclose(self) -> None:
        """Close the channel."""
        await self.transport.aclose()

    async def __aenter__(self) -> Uploader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _job(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(8)}"


def check_task(
    reply: collect_pb2.GetTaskResponse, ca: bytes, *, leader: str | None = None
) -> DeviceTask:
    """Check a task's parameters and certificates (see module docs); raise CollectError."""
    try:
        spec = spec_from_proto(reply.params)
    except ValueError as exc:
        raise CollectError(f"the node sent unusable task parameters: {exc}") from exc
    if spec.task_id != bytes(reply.task_id):
        raise CollectError(f"task {spec.name!r}: the task ID does not match its parameters")
    if leader is not None and spec.leader != leader:
        raise CollectError(f"task {spec.name!r} is led by {spec.leader}, not {leader}")
    try:
        lead = verify_peer(bytes(reply.leader_certificate_pem), ca, role="node")
        helper = verify_peer(bytes(reply.helper_certificate_pem), ca, role="node")
    except PkiError as exc:
        raise CollectError(f"task {spec.name!r}: {exc}") from exc
    if (lead.name, helper.name) != (spec.leader, spec.helper):
        raise CollectError(f"task {spec.name!r}: the certificates are not those of its aggregators")
    return DeviceTask(spec, spec.collect_task(), x25519_public(helper), lead, helper)
