"""Collection of live data end to end: Prio3Count reports through two real aggregator nodes.

Row ``collect.e2e`` (one op = one report): a gateway uploads N pre-sharded, sealed
Prio3Count reports (batches of 500, four in flight, signed, mTLS) to the Leader, a real
``datafed-node serve`` process that stores them durably; the Leader runs aggregation jobs
against the Helper (another process), both verify every proof, and the clock stops when
both windows of the round are closed at both aggregators (ledgered). Device-side sharding
is not timed (devices do it, one report each). The params carry the p50/p99 latency of
one upload request and the CPU seconds per report of each node process.

Baseline (same run): the same reports through the in-process state machines alone --
the pure :class:`~datafed.protocols.Leader` and :class:`~datafed.protocols.Helper`,
opening each sealed Helper share, verifying every proof, one process, no network, no
storage, no ledger: what the service adds is the ratio.

``python benchmarks/test_bench_collect.py`` prints where the time goes inside the nodes'
code paths (one process, CPU time per report, phase by phase).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sizes import size

from datafed.collect import Collector, DeviceTask, SealedReport, ShareOpener, Uploader
from datafed.collect.local import LocalTask, add_collection
from datafed.local.federation import LocalFederation, water_district_specs
from datafed.pki.ca import load_signing_key, party_paths
from datafed.pki.peers import x25519_private
from datafed.protocols import AggregationJobInit, Helper, Leader, Report, VerifyInit

N = size(20_000, 200)
WINDOW = 300
NOW = int(time.time())
T0 = NOW - NOW % 3600 - 86_400
PURPOSE = "service-planning"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))] * 1000 if s else 0.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFederation, Path]]:
    fed = LocalFederation.create(
        tmp_path_factory.mktemp("bench-collect"), water_district_specs(segments=10)[:2]
    )
    body = f'vdaf = "count"\ntime_precision_s = {WINDOW}\nmin_batch_size = 10\nmax_skew_s = 5\nclose_after_s = 5'
    gateways = add_collection(fed, [LocalTask("bench", body, "water-north", "water-east")])
    fed.start()
    try:
        yield fed, gateways["gw-city"]
    finally:
        fed.stop()


def _items(round_: int) -> list[tuple[int, int]]:
    """N readings over two windows of one round, then a tick that closes them."""
    base = T0 + round_ * 4 * WINDOW
    return [(i % 2, base + (i * 2 * WINDOW) // N) for i in range(N)] + [(0, base + 3 * WINDOW)]


async def _device_task(gateway: Path) -> DeviceTask:
    async with Uploader.from_file(gateway) as up:
        return await up.task("bench")


def test_e2e_ours(benchmark: Any, bench_row: Any, service: tuple[LocalFederation, Path]) -> None:
    fed, gateway = service
    task = asyncio.run(_device_task(gateway))
    rounds = iter(range(100))
    lat: list[float] = []
    cpu: dict[str, float] = {n.spec.name: 0.0 for n in fed.nodes}

    def setup() -> tuple[tuple[int, list[SealedReport]], dict[str, Any]]:
        r = next(rounds)
        return (r, task.shard_many(_items(r))), {}

    async def once(r: int, reports: list[SealedReport]) -> None:
        base = T0 + r * 4 * WINDOW
        async with Uploader.from_file(gateway) as up, Collector.from_file(fed.fed_toml) as col:
            result = await up.upload(task, reports)
            assert result.accepted == len(reports)
            lat.extend(result.batch_seconds)
            while True:
                closed = {w.start for w in await col.windows("bench", purpose=PURPOSE, since=base)}
                if {base, base + WINDOW} <= closed:
                    return
                await asyncio.sleep(0.05)

    def run(r: int, reports: list[SealedReport]) -> None:
        before = {n.spec.name: _cpu(n.process.pid) for n in fed.nodes if n.process}
        asyncio.run(once(r, reports))
        for n in fed.nodes:
            if n.process:
                cpu[n.spec.name] += _cpu(n.process.pid) - before[n.spec.name]

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    per = {k: round(v / (3 * N) * 1e6, 1) for k, v in cpu.items()}
    bench_row(
        "collect.e2e",
        role="ours",
        unit="ops/s",
        per_call=N,
        params={
            "vdaf": "count",
            "reports": N,
            "batch": 500,
            "upload_p50_ms": round(_pct(lat, 50), 1),
            "upload_p99_ms": round(_pct(lat, 99), 1),
        },
        pair="collect.e2e",
        baseline_name="in-process Leader+Helper state machines (no network, storage, ledger)",
        leader_cpu_us_per_report=per["water-north"],
        helper_cpu_us_per_report=per["water-east"],
    )


def in_process(
    task: DeviceTask, reports: list[SealedReport], opener: ShareOpener, key: bytes
) -> int:
    """The baseline: jobs of 1000 through the pure state machines, shares opened."""
    leader, helper, now = Leader(task.task, key), Helper(task.task, key), int(time.time())
    tid, committed = task.spec.task_id, 0
    for i in range(0, len(reports), 1000):
        for r in reports[i : i + 1000]:
            leader.upload(Report(r.report_id, r.time, r.public_share, r.leader_share, b""), now)
        req = leader.start_job(now)
        assert req is not None
        inits = []
        for v, r in zip(req.verify_inits, reports[i : i + 1000], strict=True):
            share = opener.open(r.binding(tid), r.helper)
            inits.append(VerifyInit(v.report_id, v.time, v.public_share, share, v.payload))
        resp = helper.handle_init(AggregationJobInit(tid, req.job_id, tuple(inits)), now)
        committed += leader.finish_job(resp).committed
        opener.forget()
    return committed


def test_e2e_baseline(
    benchmark: Any, bench_row: Any, service: tuple[LocalFederation, Path]
) -> None:
    from nodes.collect.runtime import verify_key_of

    fed, gateway = service
    task = asyncio.run(_device_task(gateway))
    helper_key = load_signing_key(party_paths(fed.pki_dir, "node", "water-east").signing_key)
    leader_key = load_signing_key(party_paths(fed.pki_dir, "node", "water-north").signing_key)
    key = verify_key_of(leader_key, task.helper, task.spec.task_id)
    rounds = iter(range(50, 100))

    def setup() -> tuple[tuple[DeviceTask, list[SealedReport], ShareOpener, bytes], dict[str, Any]]:
        return (
            task,
            task.shard_many(_items(next(rounds))[:N]),
            ShareOpener(x25519_private(helper_key)),
            key,
        ), {}

    def run(*args: Any) -> None:
        assert in_process(*args) == N

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    bench_row(
        "collect.e2e",
        role="baseline",
        unit="ops/s",
        per_call=N,
        params={"vdaf": "count", "reports": N},
        pair="collect.e2e",
        baseline_name="in-process Leader+Helper state machines (no network, storage, ledger)",
    )


def _phases(n: int = 4000) -> None:  # pragma: no cover - a measuring script
    """CPU time per report of each step a report takes through the nodes (one process)."""
    import tempfile

    from datafed import pki
    from datafed.collect import ReportBinding, TaskSpec, report_digest, seal_shares
    from datafed.pki.peers import x25519_public
    from datafed.proto.v1 import collect_pb2
    from datafed.protocols import shard_report
    from datafed.protocols._pingpong import helper_init, leader_continued, leader_init
    from nodes.collect.storage import CollectStore

    spec = TaskSpec("bench", "count", "a", "b", WINDOW, 10)
    task = spec.collect_task()
    vdaf, ctx, key, tid = task.vdaf, task.ctx, os.urandom(32), spec.task_id
    tmp = Path(tempfile.mkdtemp())
    pki.init_ca(tmp)
    ident = pki.identity_from_pem(pki.issue(tmp, "node", "b").cert.read_bytes())
    private = x25519_private(load_signing_key(party_paths(tmp, "node", "b").signing_key))
    reports = [shard_report(task, i % 2, T0 + i % WINDOW) for i in range(n)]
    binds = [ReportBinding(tid, r.report_id, r.time, r.public_share) for r in reports]
    sealed = seal_shares(
        x25519_public(ident), [(b, r.helper_share) for b, r in zip(binds, reports, strict=True)]
    )
    msg = collect_pb2.UploadRequest(task="bench")
    for r, sh in zip(reports, sealed, strict=True):
        m = msg.reports.add(report_id=r.report_id, time=r.time, public_share=r.public_share)
        m.leader_share, m.helper_enc, m.helper_ciphertext = r.leader_share, sh.enc, sh.ciphertext
    raw = msg.SerializeToString()
    steps: dict[str, float] = {}

    def clock(name: str, fn: Any) -> Any:
        t = time.process_time()
        out = fn()
        steps[name] = (time.process_time() - t) / n * 1e6
        return out

    parsed = clock(
        "upload: parse the request", lambda: list(collect_pb2.UploadRequest.FromString(raw).reports)
    )
    clock(
        "upload: decode the shares",
        lambda: [
            (vdaf.decode_public_share(m.public_share), vdaf.decode_input_share(0, m.leader_share))
            for m in parsed
        ],
    )
    digests = clock("upload: report digests", lambda: [report_digest(m) for m in parsed])
    store = CollectStore(tmp / "s.sqlite", tid, vdaf)
    rows = [
        (
            m.report_id,
            m.time,
            task.window(m.time),
            d,
            (m.public_share, m.leader_share, m.helper_enc, m.helper_ciphertext),
        )
        for m, d in zip(parsed, digests, strict=True)
    ]
    clock(
        "upload: store (SQLite, fsync per 500)",
        lambda: [store.insert_reports(rows[i : i + 500], [], 0) for i in range(0, n, 500)],
    )
    states = clock(
        "leader: leader_init",
        lambda: [
            leader_init(vdaf, key, ctx, r.report_id, r.public_share, r.leader_share)
            for r in reports
        ],
    )
    opener = ShareOpener(private)
    shares = clock(
        "helper: open the sealed share",
        lambda: [opener.open(b, sh) for b, sh in zip(binds, sealed, strict=True)],
    )
    helped = clock(
        "helper: helper_init",
        lambda: [
            helper_init(vdaf, key, ctx, r.report_id, r.public_share, h, st.outbound)
            for r, h, st in zip(reports, shares, states, strict=True)
        ],
    )
    clock(
        "leader: leader_continued",
        lambda: [
            leader_continued(vdaf, ctx, st, hs.outbound)
            for st, hs in zip(states, helped, strict=True)
        ],
    )
    for name, us in steps.items():
        print(f"{name:<42} {us:8.1f} us/report")


if __name__ == "__main__":
    _phases()
