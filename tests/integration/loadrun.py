"""A bounded load run against three real nodes, and the accounting that must hold after it.

Several analysts send many concurrent queries, in every protection mode, over an exact
dataset and a DP dataset, for a fixed time; one node is restarted in the middle. Then
every node's ledger is read as the auditor would and checked:

- every job a client saw succeed is ``approved`` then ``released`` at every node, with
  the request digests of the client's verified receipts;
- every ``approved`` entry is followed by exactly one ``released`` or ``denied`` entry of
  the same request, or by none only when its node was stopped while it ran;
- every DP budget equals the sum of its charges: epsilon appears only on ``approved``
  entries, once per admitted use;
- no entry names a job no client sent.

Used by ``tests/integration/test_load.py`` (seconds) and ``benchmarks/test_bench_load.py``
(a minute, with the figures: queries/s, p50/p99 latency, each node's peak RSS).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from audit import DataUseRecord
from datafed.client import Federation
from datafed.errors import DatafedError
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec
from tests.integration.raw import PURPOSE, ledger_records

ANALYSTS = ("alice", "bob", "carol")
MODES = ("plain", "paillier", "shares", "secagg", "ckks")
EPSILON = 0.01
QUERIES = (
    "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = {y}",
    "SELECT material, SUM(repair_hours), COUNT(*) FROM pipe_incidents WHERE month = {m} GROUP BY material",
    "SELECT AVG(income), COUNT(*) FROM residents WHERE age > {a}",
)


def _policies(extra: str = "") -> tuple[str, str]:
    names = ", ".join(f'"{a}"' for a in ANALYSTS)
    common = (
        f"allowed_requesters = [{names}]\n"
        f'allowed_purposes = ["{PURPOSE}"]\n'
        f"allowed_protections = {list(MODES)!r}\n".replace("'", '"')
        + 'allowed_aggregates = ["sum", "count", "avg"]\n'
    )
    exact = (
        common + "min_group_size = 3\nperson_level = false\n[datasets.policy.group_domains]\n"
        'material = ["cast_iron", "ductile_iron", "steel", "pvc"]\n'
    )
    dp = (
        common + "[datasets.policy.dp]\n"
        f"epsilon_per_query = {EPSILON}\nbudget_epsilon = 1000000.0\n"
        "bounds = { income = [0, 400000] }\n"
    )
    return exact, dp


def create(root: Path) -> LocalFederation:
    """Three district nodes with an exact and a DP dataset, three analysts."""
    exact, dp = _policies()
    specs = [
        NodeSpec(
            name=f"water-{d}",
            agency=f"{d.title()} District Office",
            datasets=[
                (
                    "pipe_incidents",
                    synth.PIPE_COLUMNS,
                    synth.pipe_incidents(d, seed=5, segments=60),
                ),
                ("residents", synth.RESIDENT_COLUMNS, synth.residents(d, seed=5, count=300)),
            ],
            policy_toml=exact,
            dataset_policies={"residents": dp},
        )
        for d in ("north", "east", "south")
    ]
    fed = LocalFederation.create(root, specs, analysts=ANALYSTS)
    return fed


def _pin_port(fed: LocalFederation, index: int) -> None:
    """Make node ``index`` listen where it listens now (a restart keeps its address)."""
    node = fed.nodes[index]
    port = node.address.rsplit(":", 1)[1]
    text = re.sub(
        r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{port}"', node.config.read_text()
    )
    node.config.write_text(text)


@dataclass
class Outcome:
    """What the clients saw."""

    latencies: list[float] = field(default_factory=list)
    ok: dict[str, tuple[str, dict[str, list[str]]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    restart_window: tuple[float, float] = (0.0, 0.0)
    seconds: float = 0.0

    @property
    def qps(self) -> float:
        return len(self.ok) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


async def _worker(
    fed: LocalFederation,
    analyst: str,
    deadline: float,
    seed: int,
    out: Outcome,
    modes: tuple[str, ...] = MODES,
) -> None:
    rng = random.Random(seed)
    toml = fed.fed_toml if analyst == "alice" else fed.root / f"fed-{analyst}.toml"
    n = 0
    while time.monotonic() < deadline:
        n += 1
        job = f"load-{analyst}-{seed}-{n}"
        sql = rng.choice(QUERIES).format(
            y=rng.choice((2022, 2023, 2024)), m=rng.randint(1, 12), a=rng.randint(20, 70)
        )
        mode = rng.choice(modes)
        out.sent.add(job)
        t0 = time.monotonic()
        try:
            client = Federation.from_file(toml)
            r = await client.aquery(sql, purpose=PURPOSE, protection=mode, job_id=job)
        except DatafedError as exc:
            out.failed[job] = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.25)  # a node restarting: back off a little
            continue
        out.latencies.append(time.monotonic() - t0)
        digests = {x.node: [rec.request_digest for rec in x.records] for x in r.receipts}
        out.ok[job] = (mode, digests)


def run(
    fed: LocalFederation,
    *,
    seconds: float,
    workers_per_analyst: int = 2,
    restart: bool = True,
    modes: tuple[str, ...] = MODES,
) -> Outcome:
    """Load the running federation for ``seconds``; restart node 1 in the middle."""
    _pin_port(fed, 1)
    for analyst in ANALYSTS:
        if analyst != "alice":
            fed.write_fed_toml(analyst)
    out = Outcome()

    async def main() -> None:
        start = time.monotonic()
        deadline = start + seconds
        tasks = [
            asyncio.create_task(_worker(fed, a, deadline, 1000 * i + w, out, modes))
            for i, a in enumerate(ANALYSTS)
            for w in range(workers_per_analyst)
        ]
        if restart:
            await asyncio.sleep(seconds / 2)
            t0 = time.monotonic()
            await asyncio.to_thread(fed.stop_node, fed.nodes[1])
            await asyncio.to_thread(fed.start_node, fed.nodes[1])
            out.restart_window = (t0, time.monotonic())
        await asyncio.gather(*tasks)
        out.seconds = time.monotonic() - start

    asyncio.run(main())
    return out


def peak_rss_mib(fed: LocalFederation) -> dict[str, float]:
    """Each running node's peak resident set (VmHWM), in MiB."""
    out = {}
    for node in fed.nodes:
        if node.process is None:
            continue
        status = Path(f"/proc/{node.process.pid}/status").read_text()
        kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        out[node.spec.name] = kib / 1024
    return out


def check_ledgers(fed: LocalFederation, out: Outcome) -> dict[str, int]:
    """Every accounting rule of the module docstring; return entries per node."""
    sizes = {}
    for node in fed.nodes:
        name = node.spec.name
        recs = [r for r in ledger_records(fed, name) if r.job_id.startswith("load-")]
        sizes[name] = len(recs)
        _check_node(name, recs, out, restarted=name == fed.nodes[1].spec.name)
    return sizes


def _check_node(name: str, recs: list[DataUseRecord], out: Outcome, *, restarted: bool) -> None:
    by_request: dict[str, list[DataUseRecord]] = defaultdict(list)
    for r in recs:
        assert r.job_id in out.sent, f"{name}: entry for a job no client sent: {r.job_id}"
        by_request[r.request_digest].append(r)
    open_ends = 0
    for entries in by_request.values():
        decisions = [e.decision for e in entries]
        if "step" in entries[0].details:  # a protocol step: one entry of its own request
            assert decisions in (["released"], ["denied"]), (name, decisions)
            continue
        if decisions[0] == "approved":
            if decisions == ["approved"]:
                open_ends += 1  # its node stopped while it ran (the restart)
                continue
            assert decisions in (["approved", "released"], ["approved", "denied"]), (
                name,
                decisions,
            )
        else:
            assert decisions == ["denied"], (name, decisions)
        charged = [e for e in entries if e.epsilon > 0]
        if entries[0].dataset == "residents" and decisions[0] == "approved":
            assert [(e.decision, e.epsilon) for e in charged] == [("approved", EPSILON)], entries
        else:
            assert not charged or charged[0].decision == "approved", entries
    assert open_ends == 0 or restarted, f"{name}: {open_ends} admitted request(s) never finished"
    jobs = {r.job_id for r in recs}
    for job, (_mode, digests) in out.ok.items():
        assert job in jobs, f"{name} has no entry of successful job {job}"
        mine = [r for r in recs if r.job_id == job and r.request_digest == digests[name][0]]
        assert [r.decision for r in mine] == ["approved", "released"], (name, job, mine)
    spent = sum(r.epsilon for r in recs if r.dataset == "residents")
    admitted = sum(1 for r in recs if r.dataset == "residents" and r.decision == "approved")
    assert abs(spent - admitted * EPSILON) < 1e-9, (name, spent, admitted)
