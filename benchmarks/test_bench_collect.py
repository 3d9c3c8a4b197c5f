"""Collection of live data end to end: Prio3Count reports through two real aggregator nodes.

Rows (one op = one report), all paired with one baseline measured in the same run:

* ``collect.e2e``: a gateway uploads N pre-sharded, sealed Prio3Count reports (batches of
  500, four in flight, signed, mTLS) to the Leader, a real ``datafed-node serve`` process
  that stores them durably (its SQLite file, one process); the Leader runs aggregation
  jobs against the Helper (another process), both verify every proof, and the clock stops
  when both windows of the round are closed at both aggregators (ledgered);
* ``collect.e2e.pg``: the same with each aggregator on PostgreSQL (a real server on
  loopback, one database each) and ``workers`` = 1 or 2 aggregation worker processes per
  aggregator beside its ``serve`` (param ``workers``); the CPU per report includes the
  database server's, and ``wal_bytes_per_report`` the write-ahead log both databases
  wrote (what a PostgreSQL primary must sustain);
* ``collect.e2e.batch``: the aggregation alone through the batched pure functions the
  nodes drive (:func:`~datafed.protocols.leader_start`, ``helper_run``, ``leader_finish``),
  shares opened, one process, no network, storage or ledger.

Device-side sharding is not timed (devices do it, one report each). The extra fields carry
the p50/p99 latency of one upload request and the CPU microseconds per report of each
aggregator's processes (and the database server's).

Baseline: the same reports through the per-report state machines
(:class:`~datafed.protocols.Leader`, :class:`~datafed.protocols.Helper`), shares opened,
one process, no network, storage or ledger.

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


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (a node's worker processes)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        todo += kids
    total = 0.0
    for p in tree:
        try:
            total += _cpu(p)
        except (OSError, IndexError, ValueError):
            continue
    return total


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))] * 1000 if s else 0.0


BODY = (
    f'vdaf = "count"\ntime_precision_s = {WINDOW}\nmin_batch_size = 10\nmax_skew_s = 5\n'
    "close_after_s = 5"
)


def _federation(root: Path, services: dict[str, str] | None = None) -> tuple[LocalFederation, Path]:
    fed = LocalFederation.create(root, water_district_specs(segments=10)[:2])
    task = LocalTask("bench", BODY, "water-north", "water-east")
    gateways = add_collection(fed, [task], services=services)
    fed.start()
    return fed, gateways["gw-city"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFederation, Path]]:
    fed, gw = _federation(tmp_path_factory.mktemp("bench-collect"))
    try:
        yield fed, gw
    finally:
        fed.stop()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.engines
    from tests.engines.pg import start_pg

    try:
        server = start_pg()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def _items(round_: int) -> list[tuple[int, int]]:
    """N readings over two windows of one round, then a tick that closes them."""
    base = T0 + round_ * 4 * WINDOW
    return [(i % 2, base + (i * 2 * WINDOW) // N) for i in range(N)] + [(0, base + 3 * WINDOW)]


async def _device_task(gateway: Path) -> DeviceTask:
    async with Uploader.from_file(gateway) as up:
        return await up.task("bench")


def _e2e(
    benchmark: Any, fed: LocalFederation, gateway: Path, first_round: int, pg: Any = None
) -> dict[str, Any]:
    """Three rounds of N reports through the service; latencies and CPU per report."""
    task = asyncio.run(_device_task(gateway))
    rounds = iter(range(first_round, first_round + 100))
    lat: list[float] = []
    pids = {n.spec.name: n.process.pid for n in fed.nodes if n.process}
    if pg is not None:
        pids["postgresql"] = pg.process.pid
    cpu = dict.fromkeys(pids, 0.0)

    def setup() -> tuple[tuple[int, list[SealedReport]], dict[str, Any]]:
        r = next(rounds)
        return (r, task.shard_many(_items(r))), {}

    async def once(r: int, reports: list[SealedReport]) -> None:
        base = T0 + r * 4 * WINDOW
        async with Uploader.from_file(gateway) as up, Collector.from_file(fed.fed_toml) as col:
            result = await up.upload(task, reports[:-1])
            tick = await up.upload(task, reports[-1:])  # after the rest: it closes the windows
            assert result.accepted + tick.accepted == len(reports)
            lat.extend(result.batch_seconds)
            while True:
                closed = {w.start for w in await col.windows("bench", purpose=PURPOSE, since=base)}
                if {base, base + WINDOW} <= closed:
                    return
                await asyncio.sleep(0.05)

    wal = [0]

    def lsn() -> str:
        with pg.connect() as conn:
            return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])

    def run(r: int, reports: list[SealedReport]) -> None:
        before = {k: _tree_cpu(p) for k, p in pids.items()}
        start = lsn() if pg is not None else ""
        asyncio.run(once(r, reports))
        for k, p in pids.items():
            cpu[k] += _tree_cpu(p) - before[k]
        if pg is not None:
            with pg.connect() as conn:
                q = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)"
                wal[0] += int(conn.execute(q, (start,)).fetchone()[0])

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    per = {k: round(v / (3 * N) * 1e6, 1) for k, v in cpu.items()}
    return {
        "upload_p50_ms": round(_pct(lat, 50), 1),
        "upload_p99_ms": round(_pct(lat, 99), 1),
        "leader_cpu_us_per_report": per["water-north"],
        "helper_cpu_us_per_report": per["water-east"],
        **(
            {
                "database_cpu_us_per_report": per["postgresql"],
                "wal_bytes_per_report": round(wal[0] / (3 * N)),
            }
            if pg is not None
            else {}
        ),
        "load_average": round(os.getloadavg()[0], 2),
    }


BASELINE = "in-process Leader+Helper state machines, report by report (no network, storage, ledger)"


def test_e2e_ours(benchmark: Any, bench_row: Any, service: tuple[LocalFederation, Path]) -> None:
    fed, gateway = service
    extra = _e2e(benchmark, fed, gateway, 0)
    bench_row(
        "collect.e2e",
        role="ours",
        unit="ops/s",
        per_call=N,
        params={"vdaf": "count", "reports": N, "batch": 500, "store": "sqlite", "processes": 1},
        pair="collect.e2e",
        baseline_name=BASELINE,
        **extra,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_e2e_postgresql(
    benchmark: Any, bench_row: Any, pg_server: Any, tmp_path: Path, workers: int
) -> None:
    from tests.engines.collect_pg import PASSWORD_ENV, service

    os.environ[PASSWORD_ENV] = pg_server.admin_password
    dbs = {n: f"bench_{n.replace('-', '_')}_{workers}" for n in ("water-north", "water-east")}
    with pg_server.connect() as conn:
        for db in dbs.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
    services = {n: service(pg_server, db, workers, lease_s=30.0) for n, db in dbs.items()}
    fed, gateway = _federation(tmp_path, services)
    try:
        extra = _e2e(benchmark, fed, gateway, 10 * workers, pg_server)
    finally:
        fed.stop()
    bench_row(
        "collect.e2e.pg",
        role="ours",
        unit="ops/s",
        per_call=N,
        params={
            "vdaf": "count",
            "reports": N,
            "batch": 500,
            "store": "postgresql",
            "workers": workers,
        },
        pair="collect.e2e",
        baseline_name=BASELINE,
        **extra,
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


def batched(task: DeviceTask, reports: list[SealedReport], opener: ShareOpener, key: bytes) -> int:
    """Jobs of 1000 through the batched pure functions the nodes drive, shares opened."""
    from datafed.protocols import helper_run, leader_finish, leader_start

    t, tid, committed, now = task.task, task.spec.task_id, 0, int(time.time())
    for i in range(0, len(reports), 1000):
        job = reports[i : i + 1000]
        ids, times = [r.report_id for r in job], [r.time for r in job]
        publics = [r.public_share for r in job]
        start = leader_start(t, key, ids, times, publics, [r.leader_share for r in job], set())
        shares: list[bytes | None] = [opener.open(r.binding(tid), r.helper) for r in job]
        run = helper_run(
            t, key, ids, times, publics, shares, start.payloads, seen=set(), closed=set(), now=now
        )
        sums = leader_finish(t, start, ids, times, run.answers, set())
        committed += sum(s.count for s in sums.values())
        opener.forget()
    return committed


def _in_process_setup(fed: LocalFederation, gateway: Path, first: int) -> Any:
    from nodes.collect.runtime import verify_key_of

    task = asyncio.run(_device_task(gateway))
    helper_key = load_signing_key(party_paths(fed.pki_dir, "node", "water-east").signing_key)
    leader_key = load_signing_key(party_paths(fed.pki_dir, "node", "water-north").signing_key)
    key = verify_key_of(leader_key, task.helper, task.spec.task_id)
    rounds = iter(range(first, first + 50))

    def setup() -> tuple[tuple[DeviceTask, list[SealedReport], ShareOpener, bytes], dict[str, Any]]:
        return (
            task,
            task.shard_many(_items(next(rounds))[:N]),
            ShareOpener(x25519_private(helper_key)),
            key,
        ), {}

    return setup


def test_e2e_batched_in_process(
    benchmark: Any, bench_row: Any, service: tuple[LocalFederation, Path]
) -> None:
    setup = _in_process_setup(*service, 60)

    def run(*args: Any) -> None:
        assert batched(*args) == N

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    bench_row(
        "collect.e2e.batch",
        role="ours",
        unit="ops/s",
        per_call=N,
        params={"vdaf": "count", "reports": N, "path": "batched pure functions, one process"},
        pair="collect.e2e",
        baseline_name=BASELINE,
        load_average=round(os.getloadavg()[0], 2),
    )


def test_e2e_baseline(
    benchmark: Any, bench_row: Any, service: tuple[LocalFederation, Path]
) -> None:
    setup = _in_process_setup(*service, 50)

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
        baseline_name=BASELINE,
        load_average=round(os.getloadavg()[0], 2),
    )


def _phases(n: int = 4000) -> None:  # pragma: no cover - a measuring script
    """CPU time per report of each step a report takes through the nodes (one process)."""
    import secrets
    import tempfile

    from datafed import pki
    from datafed.collect import ReportBinding, TaskSpec, report_digest_of, seal_shares
    from datafed.pki.peers import x25519_public
    from datafed.proto.v1 import collect_pb2
    from datafed.protocols import helper_run, leader_finish, leader_start, shard_report
    from nodes.collect.db import SqliteDb
    from nodes.collect.storage import SCHEMA, CollectStore

    spec = TaskSpec("bench", "count", "a", "b", WINDOW, 10)
    task = spec.collect_task()
    vdaf, key, tid = task.vdaf, os.urandom(32), spec.task_id
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
    fields = [
        (m.report_id, m.time, m.public_share, m.leader_share, m.helper_enc, m.helper_ciphertext)
        for m in parsed
    ]
    digests = clock("upload: report digests", lambda: [report_digest_of(*f) for f in fields])
    store = CollectStore(SqliteDb(tmp / "s.sqlite", SCHEMA), tid, vdaf)
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
    jobs = [secrets.token_bytes(16) for _ in range(0, n, 1000)]
    claimed = clock(
        "leader: claim the jobs (SQLite, 1000 each)",
        lambda: [store.claim_job(j, 1000, "bench", 60_000) for j in jobs],
    )
    assert sum(len(rows) for _, rows in claimed) == n
    ids, times = [r.report_id for r in reports], [r.time for r in reports]
    publics = [r.public_share for r in reports]
    start = clock(
        "leader: leader_start (batched)",
        lambda: leader_start(
            task, key, ids, times, publics, [r.leader_share for r in reports], set()
        ),
    )
    opener = ShareOpener(private)
    shares: list[bytes | None] = clock(
        "helper: open the sealed shares",
        lambda: opener.open_many(
            tid, ids, times, publics, [sh.enc for sh in sealed], [sh.ciphertext for sh in sealed]
        ),
    )
    run = clock(
        "helper: helper_run (batched)",
        lambda: helper_run(
            task, key, ids, times, publics, shares, start.payloads, seen=set(), closed=set(), now=T0
        ),
    )
    clock(
        "leader: leader_finish (batched)",
        lambda: leader_finish(task, start, ids, times, run.answers, set()),
    )
    clock(
        "leader: finish the jobs (SQLite)",
        lambda: [store.finish_job(j, 1, {}) for j in jobs],
    )
    for name, us in steps.items():
        print(f"{name:<42} {us:8.1f} us/report")


if __name__ == "__main__":
    _phases()
