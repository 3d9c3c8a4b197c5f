"""Real aggregator nodes for the collection tests, and clients that play any party.

:func:`collect_federation` starts two ``datafed-node serve`` processes (mTLS on
127.0.0.1) that aggregate the given tasks; :func:`party` is a signed client with any
party's certificate -- a gateway, an analyst, or the Leader node itself, to play a
hostile Leader against the Helper.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datafed.client import FederationConfig, NodeEndpoint, Transport
from datafed.collect import Collector, DeviceTask, Uploader
from datafed.collect.local import LocalTask, add_collection
from datafed.hazmat import Field64, SumCircuit
from datafed.local.federation import LocalFederation, water_district_specs
from datafed.pki.ca import load_signing_key, party_paths
from datafed.pki.tls import PartyFiles, TlsMaterial
from datafed.proto.v1 import collect_pb2, collect_pb2_grpc
from datafed.protocols import Prio3

LEADER, HELPER = "water-north", "water-east"
PURPOSE = "service-planning"
WINDOW = 60
#: Report times start here: three days ago, aligned, so every window is in the past.
T0 = (int(time.time()) - 3 * 86_400) // 3600 * 3600


def window(i: int) -> int:
    """The start of the ``i``-th collection window after :data:`T0`."""
    return T0 + i * WINDOW


def make_task(
    name: str,
    extra: str = "",
    *,
    vdaf: str = 'vdaf = "count"',
    end: bool = True,
    min_batch: int = 5,
    close_after: int = 30,
) -> LocalTask:
    """A task (Prio3Count by default) over 60 s windows from :data:`T0`, one day long."""
    body = (
        f"{vdaf}\ntime_precision_s = {WINDOW}\nmin_batch_size = {min_batch}\nstart = {T0}\n"
        + (f"end = {T0 + 86_400}\n" if end else "")
        + f"max_skew_s = 5\nclose_after_s = {close_after}\n"
        + extra
    )
    return LocalTask(name, body, LEADER, HELPER)


def collect_federation(root: Path, tasks: Sequence[LocalTask], **kw: Any) -> LocalFederation:
    """Create and start the two aggregators (``water-north`` leads, ``water-east`` helps)."""
    fed = LocalFederation.create(
        root, water_district_specs(segments=10)[:2], analysts=("alice", "bob")
    )
    add_collection(fed, tasks, gateways=("gw-city", "gw-rogue"), **kw)
    fed.start()
    return fed


def gateway_file(fed: LocalFederation, name: str = "gw-city") -> Path:
    """The gateway's config file."""
    return fed.root / f"gateway-{name}.toml"


def party(fed: LocalFederation, role: str, name: str, node: str) -> Transport:
    """A signed client to ``node`` with the certificate and key of ``role:name``."""
    files = party_paths(fed.pki_dir, role, name)
    tls = PartyFiles(
        ca=fed.pki_dir / "ca.crt", cert=files.cert, key=files.key, signing_key=files.signing_key
    )
    address = next(n.address for n in fed.nodes if n.spec.name == node)
    config = FederationConfig(
        analyst=name, tls=tls, nodes=[NodeEndpoint(name=node, address=address)]
    )
    return Transport(config, TlsMaterial.load(tls), load_signing_key(files.signing_key))


async def signed(t: Transport, node: str, rpc: str, msg: Any, purpose: str = PURPOSE) -> Any:
    """Send ``msg`` (header filled in) as a signed ``rpc`` of the CollectService."""
    msg.header.CopyFrom(t.header(node, f"test-{time.monotonic_ns()}", purpose))
    request = t.sign(msg).request

    async def go(ch: Any) -> Any:
        return await getattr(collect_pb2_grpc.CollectServiceStub(ch), rpc)(request)

    return await t.call(node, go)


async def raw_upload(
    fed: LocalFederation, task: str, msgs: Sequence[Any], gateway: str = "gw-city"
) -> list[str]:
    """Upload hand-made ``Report`` messages as ``gateway``; the status names, in order."""
    async with Uploader.from_file(gateway_file(fed, gateway)) as up:
        reply = await signed(
            up.transport, LEADER, "Upload", collect_pb2.UploadRequest(task=task, reports=msgs)
        )
    return [collect_pb2.ReportStatus.Name(s) for s in reply.statuses]


async def shard_protos(
    fed: LocalFederation, task: str, items: Sequence[tuple[Any, int]]
) -> list[Any]:
    """``(measurement, time)`` items sharded by the gateway's device task, as ``Report`` messages."""
    async with Uploader.from_file(gateway_file(fed)) as up:
        dt = await up.task(task)
        return [r.to_proto() for r in dt.shard_many(items)]


async def upload(
    fed: LocalFederation, task: str, items: Sequence[tuple[Any, int]]
) -> tuple[DeviceTask, list[str]]:
    """Shard and upload ``(measurement, time)`` items as the gateway; the statuses."""
    async with Uploader.from_file(gateway_file(fed)) as up:
        dt = await up.task(task)
        result = await up.upload(dt, dt.shard_many(items))
    return dt, list(result.statuses)


async def wait_closed(
    fed: LocalFederation, task: str, starts: Sequence[int], timeout: float = 30.0
) -> None:
    """Wait until the Leader lists every window of ``starts`` as closed."""
    deadline = time.monotonic() + timeout
    async with Collector.from_file(fed.fed_toml) as col:
        while True:
            closed = {w.start for w in await col.windows(task, purpose=PURPOSE)}
            if set(starts) <= closed:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"windows {sorted(set(starts) - closed)} of {task} never closed"
                )
            await asyncio.sleep(0.2)


class OutOfRangeSum(SumCircuit):
    """A faulty device: puts any integer in the first 'bit' and proves honestly over it."""

    def encode(self, measurement: int) -> list[int]:
        bits = [0] * self.bits
        bits[0] = measurement % self.field.MODULUS
        return bits


def faulty(dt: DeviceTask, max_measurement: int) -> DeviceTask:
    """The same task as a faulty Sum device sees it (same VDAF id, invalid encodings)."""
    vdaf = Prio3(OutOfRangeSum(Field64, max_measurement), shares=2, vdaf_id=0x00000002)
    return dataclasses.replace(dt, task=dataclasses.replace(dt.task, vdaf=vdaf))
