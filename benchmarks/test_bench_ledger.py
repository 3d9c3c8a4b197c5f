"""Ledger benchmarks (docs/bench.md rows ``ledger.append``, ``ledger.verify_inclusion``,
``ledger.verify_full``), each beside a naive baseline measured in the same run.

Sizes: ``DATAFED_BENCH_LEDGER_N`` leaves for the full-verification log (default 1,000,000,
the issue's target), 256 concurrent asyncio writers for appends (as in a busy node: every
one waits for its entry to be durable; the committer thread groups them, docs/ledger.md).
The ``ledger.append`` row carries the writers' p50/p99 latency in its params.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sizes import env_size, size

from audit import DataUseRecord, Ledger, merkle
from audit.checkpoint import Checkpoint, log_verifier, sign_checkpoint
from audit.export import ExportDir, write_export
from audit.policy import Policy
from audit.records import encode_body, encode_leaf
from audit.verify import verify_log

N_FULL = int(env_size("DATAFED_BENCH_LEDGER_N", "1000000", "2000"))
WRITERS = size(256, 8)
PER_WRITER = size(25, 2)
NAIVE_APPENDS = size(300, 5)
ORIGIN = "datafed/ledger/bench"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)


def record(i: int) -> DataUseRecord:
    return DataUseRecord(
        node="water-north",
        requester=f"analyst-{i % 13}",
        requester_role="analyst",
        dataset="pipe_incidents",
        purpose="service-planning",
        legal_basis="water-act-s12",
        operation="query",
        protection="paillier",
        request_digest=hashlib.sha256(str(i).encode()).hexdigest(),
        result_digest=hashlib.sha256(str(-i).encode()).hexdigest(),
        decision="released",
        reason="policy ok",
        epsilon=0.1,
        job_id=f"job-{i // 3}",
        time_ms=1_700_000_000_000 + i,
    )


# ----------------------------------------------------------------------------- append


class NaiveLog:
    """Baseline: one fsync'd commit per entry, then the whole tree re-hashed."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, leaf BLOB)")
        self.leaves: list[bytes] = []

    def append(self, rec: DataUseRecord) -> bytes:
        leaf = encode_leaf(len(self.leaves), encode_body(rec))
        self.db.execute("INSERT INTO entries VALUES (?, ?)", (len(self.leaves), leaf))
        self.leaves.append(leaf)
        return merkle.root_from_leaf_hashes(merkle.hash_leaf(x) for x in self.leaves)[1]


def _cpu_rate(fn: Any, count: int) -> float:
    """Items per CPU-second of this process for one call of ``fn`` (load-independent-ish)."""
    c = time.process_time()
    fn()
    return round(count / max(time.process_time() - c, 1e-9))


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else 0.0


RECORDS = [record(i) for i in range(WRITERS * PER_WRITER)]


def _concurrent(ledger: Ledger, lat: list[float]) -> None:
    """WRITERS concurrent asyncio callers (as in a node), each appending PER_WRITER entries."""

    async def work(w: int) -> None:
        for r in RECORDS[w * PER_WRITER : (w + 1) * PER_WRITER]:
            t = time.perf_counter()
            await ledger.append_async(r)
            lat.append(time.perf_counter() - t)

    async def main() -> None:
        await asyncio.gather(*(work(w) for w in range(WRITERS)))

    asyncio.run(main())


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def test_append_ours(benchmark: Any, bench_row: Any, tmp_dir: Path) -> None:
    single: list[float] = []
    with Ledger.open(tmp_dir / "lat.db", ORIGIN, KEY) as led:
        for i in range(300):
            t = time.perf_counter()
            led.append(record(i))
            single.append(time.perf_counter() - t)
    lat: list[float] = []
    counter = iter(range(1000))

    def setup() -> tuple[tuple[Ledger, list[float]], dict[str, Any]]:
        return (Ledger.open(tmp_dir / f"l{next(counter)}.db", ORIGIN, KEY), lat), {}

    def run(ledger: Ledger, lat: list[float]) -> None:
        _concurrent(ledger, lat)
        ledger.close()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    cpu = _cpu_rate(lambda: run(*setup()[0]), WRITERS * PER_WRITER)
    bench_row(
        "ledger.append",
        role="ours",
        unit="entries/s",
        per_call=WRITERS * PER_WRITER,
        params={
            "writers": WRITERS,
            "api": "async",
            "durable": True,
            "p50_ms": round(_pct(lat, 50), 2),
            "p99_ms": round(_pct(lat, 99), 2),
        },
        pair="ledger.append",
        baseline_name="fsync per entry + full rehash",
        entries_per_cpu_s=cpu,
        single_p50_ms=round(_pct(single, 50), 3),
        single_p99_ms=round(_pct(single, 99), 3),
    )


def test_append_naive(benchmark: Any, bench_row: Any, tmp_dir: Path) -> None:
    counter = iter(range(1000))
    recs = [record(i) for i in range(NAIVE_APPENDS)]

    def setup() -> tuple[tuple[NaiveLog], dict[str, Any]]:
        return (NaiveLog(tmp_dir / f"n{next(counter)}.db"),), {}

    def run(log: NaiveLog) -> None:
        for r in recs:
            log.append(r)
        log.db.close()

    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    bench_row(
        "ledger.append",
        role="baseline",
        unit="entries/s",
        per_call=NAIVE_APPENDS,
        params={"writers": 1, "api": "sync", "durable": True},
        pair="ledger.append",
        baseline_name="fsync per entry + full rehash",
    )


# ----------------------------------------------------------------------------- big log


@dataclass
class BigLog:
    leaves: list[bytes]
    hashes: list[bytes]
    levels: list[list[bytes]]
    export: Path
    policy: Policy
    sizes: list[int]

    def get_hashes(self, ids: Any) -> list[bytes]:
        return [self.levels[lvl][i] for lvl, i in ids]


@pytest.fixture(scope="module")
def big_log() -> Iterator[BigLog]:
    bodies = [encode_body(record(i)) for i in range(256)]
    leaves = [encode_leaf(i, bodies[i & 255]) for i in range(N_FULL)]
    hashes = [merkle.hash_leaf(x) for x in leaves]
    levels = [hashes]
    while len(levels[-1]) > 1:
        lv = levels[-1]
        levels.append([merkle.hash_children(lv[i], lv[i + 1]) for i in range(0, len(lv) - 1, 2)])
    sizes = [N_FULL * k // 10 for k in range(1, 11)]
    cr, notes = merkle.CompactRange(), []
    for i, h in enumerate(hashes):
        cr.append(h)
        if i + 1 in sizes:
            notes.append(
                (i + 1, sign_checkpoint(Checkpoint(ORIGIN, i + 1, cr.root()), KEY).encode())
            )
    with tempfile.TemporaryDirectory() as d:
        out = write_export(Path(d) / "export", ORIGIN, leaves, notes, hashes)
        yield BigLog(
            leaves, hashes, levels, out, Policy({ORIGIN: log_verifier(ORIGIN, KEY)}), sizes
        )


def test_verify_full_ours(benchmark: Any, bench_row: Any, big_log: BigLog) -> None:
    def run() -> None:
        report = verify_log(ExportDir(big_log.export), big_log.policy)
        assert report.ok and report.entries == N_FULL

    benchmark.pedantic(run, rounds=3, iterations=1)
    cpu = _cpu_rate(run, N_FULL)
    bench_row(
        "ledger.verify_full",
        role="ours",
        unit="leaves/s",
        per_call=N_FULL,
        params={"entries": N_FULL, "checkpoints": 10},
        baseline_name="rehash per checkpoint",
        leaves_per_cpu_s=cpu,
    )


def test_verify_full_naive(benchmark: Any, bench_row: Any, big_log: BigLog) -> None:
    def run() -> None:
        for upto in big_log.sizes:  # every checkpoint checked by re-hashing the chain
            merkle.root_from_leaf_hashes(merkle.hash_leaf(x) for x in big_log.leaves[:upto])

    benchmark.pedantic(run, rounds=1, iterations=1)
    bench_row(
        "ledger.verify_full",
        role="baseline",
        unit="leaves/s",
        per_call=N_FULL,
        params={"entries": N_FULL, "checkpoints": 10},
        baseline_name="rehash per checkpoint",
    )


PROOFS = size(5000, 20)


def test_verify_inclusion_ours(benchmark: Any, bench_row: Any, big_log: BigLog) -> None:
    rng = random.Random(7)
    root = merkle.CompactRange(N_FULL, big_log.get_hashes(merkle.range_nodes(0, N_FULL))).root()
    idx = [rng.randrange(N_FULL) for _ in range(PROOFS)]
    cases = [(big_log.hashes[i], i, merkle.inclusion_proof(i, N_FULL, big_log)) for i in idx]

    def run() -> None:
        for h, i, proof in cases:
            merkle.verify_inclusion(h, i, N_FULL, proof, root)

    benchmark.pedantic(run, rounds=5, iterations=1)
    cpu = _cpu_rate(run, PROOFS)
    bench_row(
        "ledger.verify_inclusion",
        role="ours",
        unit="proofs/s",
        per_call=PROOFS,
        params={"tree_size": N_FULL},
        baseline_name="rehash the chain per check",
        proofs_per_cpu_s=cpu,
    )


def test_verify_inclusion_naive(benchmark: Any, bench_row: Any, big_log: BigLog) -> None:
    root = merkle.CompactRange(N_FULL, big_log.get_hashes(merkle.range_nodes(0, N_FULL))).root()

    def run() -> None:  # one check: recompute the root over every leaf hash
        assert merkle.root_from_leaf_hashes(big_log.hashes)[1] == root

    benchmark.pedantic(run, rounds=2, iterations=1)
    bench_row(
        "ledger.verify_inclusion",
        role="baseline",
        unit="proofs/s",
        per_call=1,
        params={"tree_size": N_FULL},
        baseline_name="rehash the chain per check",
    )
