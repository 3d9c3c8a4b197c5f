"""A node's ``[[collect]]`` block, the ``collect`` rules and budget, and the task's file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from datafed.errors import ConfigError
from datafed.pki.ca import Identity, identity_from_pem, party_paths
from datafed.wire.signing import new_header
from nodes.collect.db import SqliteDb
from nodes.collect.storage import CLAIM_SQL, SCHEMA, CollectStore, WindowDelta
from nodes.config import load_node_config
from nodes.errors import BudgetExhausted, NotFound, PermissionDenied
from nodes.policy import PolicyEngine, Use

NODE = """
[node]
name = "water-north"
listen = "127.0.0.1:0"

[tls]
ca = "ca.crt"
cert = "n.crt"
key = "n.key"
signing_key = "n.ed25519"

[[collect]]
name = "water-use"
vdaf = "sum"
max_measurement = 255
time_precision_s = 300
min_batch_size = 10
start = 2026-01-01T00:00:00Z
max_skew_s = 60
close_after_s = 60

[collect.leader]
name = "water-north"
cert = "n.crt"

[collect.helper]
name = "water-east"
cert = "e.crt"
address = "10.0.0.2:50051"

[[collect.collectors]]
name = "alice"
purposes = ["consumption"]

[collect.dp]
epsilon = 0.5
budget_epsilon = 1.0
budget_scope = "requester"
"""


def load(tmp_path: Path, text: str = NODE):
    (tmp_path / "node.toml").write_text(text)
    return load_node_config(tmp_path / "node.toml")


def test_a_node_with_only_a_collection_task_loads(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    task = cfg.collect_task("water-use")
    assert task is not None and not cfg.datasets
    spec = task.spec()
    assert (spec.vdaf, spec.start, spec.leader, spec.helper) == (
        "sum",
        1_767_225_600,
        "water-north",
        "water-east",
    )
    assert task.helper.cert == (tmp_path / "e.crt").resolve()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            lambda s: s.replace('name = "water-north"\ncert', 'name = "water-south"\ncert'),
            "neither",
        ),
        (lambda s: s.replace('address = "10.0.0.2:50051"\n', ""), "helper.address"),
        (lambda s: s.replace("max_measurement = 255\n", ""), "max_measurement"),
        (lambda s: s.replace("close_after_s = 60", "close_after_s = 10"), "close_after_s"),
        (lambda s: s.replace("epsilon = 0.5", "rho = 0.5"), "laplace takes epsilon"),
        (lambda s: s.replace('vdaf = "sum"', 'vdaf = "median"'), "vdaf"),
        (lambda s: s.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00"), "time zone"),
        (lambda s: s + '\n[[collect]]\nname = "water-use"\n', "collect"),
    ],
)
def test_a_bad_collect_block_names_the_problem(tmp_path: Path, edit, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, edit(NODE))
    assert fragment in str(info.value)


@pytest.fixture
def identities(pki_dir: Path) -> dict[str, Identity]:
    from datafed import pki

    for role, name in (("analyst", "bob"), ("gateway", "gw")):
        if not party_paths(pki_dir, role, name).cert.exists():
            pki.issue(pki_dir, role, name)
    out = {}
    for role, name in (("analyst", "alice"), ("analyst", "bob"), ("gateway", "gw")):
        out[name] = identity_from_pem(party_paths(pki_dir, role, name).cert.read_bytes())
    return out


def use(who: Identity, purpose: str = "consumption", task: str = "water-use") -> Use:
    header = new_header(who.name, "water-north", f"job-{time.monotonic_ns()}", purpose)
    return Use("collect", who, header, task, protection="prio3", epsilon=0.5)


def test_collect_rules_and_budget(tmp_path: Path, identities: dict[str, Identity]) -> None:
    cfg = load(tmp_path)
    engine = PolicyEngine(cfg, {}, "water-north", b"")
    with pytest.raises(PermissionDenied, match="need 'analyst'"):
        engine.check(use(identities["gw"]))
    with pytest.raises(NotFound, match="unknown collection task"):
        engine.check(use(identities["alice"], task="nope"))
    with pytest.raises(PermissionDenied, match="may not collect"):
        engine.check(use(identities["bob"]))
    with pytest.raises(PermissionDenied, match="purpose 'spying'"):
        engine.check(use(identities["alice"], "spying"))
    entries: list[dict[str, object]] = []

    async def record(**kw: object) -> int:
        entries.append(kw)
        return len(entries) - 1

    async def admit_three() -> None:
        for _ in range(2):  # budget 1.0 = 2 x 0.5
            grant = await engine.admit(use(identities["alice"]), record)
            assert grant.epsilon == 0.5
        with pytest.raises(BudgetExhausted):
            await engine.admit(use(identities["alice"]), record)

    asyncio.run(admit_three())
    assert [e["decision"] for e in entries] == ["approved", "approved"]
    assert engine.budget.spent("alice", "water-use") == 1.0


def exercise_store(make: Any) -> None:
    """Statuses, watermark, leased jobs and the window merge of a store from ``make(task_id)``."""
    from datafed.protocols import Prio3Count

    vdaf = Prio3Count()
    store = CollectStore(make(), b"\x01" * 32, vdaf)
    shares = (b"", b"l", b"e", b"c")
    # IDs in descending order: a job takes reports in upload order, not by ID.
    rows = [(bytes([9 - i]) * 16, 1000 + i, 900, bytes([i]) * 32, shares) for i in range(3)]
    assert store.insert_reports(rows, ["invalid_message"], 1) == ["accepted"] * 3
    again = [rows[0], (rows[1][0], 1001, 900, b"\xff" * 32, shares)]
    assert store.insert_reports(again, [], 2) == ["duplicate", "report_replayed"]
    # A new report beside a stored one, and one ID twice in a batch: each told apart.
    fresh = (b"\x05" * 16, 1002, 900, b"\x05" * 32, shares)
    assert store.insert_reports([fresh, rows[2], fresh], [], 2) == [
        "accepted",
        "duplicate",
        "duplicate",
    ]
    rows.append(fresh)
    assert store.watermark() == 1002
    assert store.upload_rejections() == {"invalid_message": 1, "report_replayed": 1}
    store.set_state(900, "closing")
    late = (b"\x09" * 16, 1100, 900, b"\x09" * 32, shares)
    assert store.insert_reports([late], [], 3) == ["batch_collected"]
    assert store.unfinished(900) == 4
    gen, claimed = store.claim_job(b"j" * 16, 10, "w1", 60_000)
    assert gen == 1 and [r.report_id for r in claimed] == [r[0] for r in rows]
    gen2, none = store.claim_job(b"x" * 16, 10, "w2", 60_000)
    assert gen2 == 0 and len(none) == 0  # nothing left to claim
    assert store.reclaim_job("w2", 60_000) is None  # the lease holds
    delta = WindowDelta([1], 3, b"\x05" * 32, {"vdaf_verify_error": 1})
    assert store.finish_job(b"j" * 16, gen, {900: delta})
    assert not store.finish_job(b"j" * 16, gen, {900: delta})  # committed once
    row = store.window(900)
    assert row is not None
    assert (row.agg, row.count, row.checksum, row.rejected) == (
        [1],
        3,
        b"\x05" * 32,
        {"vdaf_verify_error": 1},
    )
    assert store.unfinished(900) == 0 and store.open_jobs() == []
    store.close()
    with pytest.raises(ConfigError, match="another configuration"):
        CollectStore(make(), b"\x02" * 32, vdaf)


def test_store_statuses_watermark_leases_and_window_merge(tmp_path: Path) -> None:
    exercise_store(lambda: SqliteDb(tmp_path / "t.sqlite", SCHEMA))


def test_claiming_a_job_searches_pending_reports_not_every_report(tmp_path: Path) -> None:
    db = SqliteDb(tmp_path / "t.sqlite", SCHEMA)
    with db.tx() as cur:
        plan = " ".join(str(r[-1]) for r in cur.execute("EXPLAIN QUERY PLAN " + CLAIM_SQL, (5,)))
    db.close()
    assert "reports_pending" in plan and "SCAN" not in plan, plan


def test_sqlite_reads_and_the_clock_do_not_wait_for_the_writer(tmp_path: Path) -> None:
    """A step's reads run beside a writer mid-commit (WAL) and see what was committed."""
    import concurrent.futures

    from datafed.protocols import Prio3Count

    store = CollectStore(SqliteDb(tmp_path / "t.sqlite", SCHEMA), b"\x01" * 32, Prio3Count())
    vdaf = Prio3Count()
    share = (b"", b"\x00" * 10, b"\x00" * 32, b"\x00" * 10)
    assert store.insert_reports([(b"r" * 16, 905, 900, b"d" * 32, share)], []) == ["accepted"]
    job = store.claim_job(b"j" * 16, 10, "me", 60_000)[1]
    assert len(job) == 1
    store.finish_job(b"j" * 16, 1, {900: WindowDelta(vdaf.agg_init(), 1, b"\x00" * 32, {})})
    reads = {
        "now": store.now_ms,
        "closed": lambda: store.closed_among([900]),
        "unfinished": lambda: store.unfinished(900),
        "windows": lambda: [w.count for w in store.windows()],
        "watermark": store.watermark,
        "reclaim": lambda: store.reclaim_job("me", 60_000),
        "jobs": store.open_jobs,
        "rejections": store.upload_rejections,
    }
    db: Any = store.db
    pool = concurrent.futures.ThreadPoolExecutor(4)
    db._lock.acquire()  # a writer holds it (mid-commit)
    try:
        futures = {k: pool.submit(f) for k, f in reads.items()}
        got = {k: f.result(timeout=10) for k, f in futures.items()}
    finally:
        db._lock.release()
        pool.shutdown()
    assert got["closed"] == set() and got["unfinished"] == 0 and got["windows"] == [1]
    assert got["watermark"] == 905 and got["reclaim"] is None and got["jobs"] == []
    assert abs(got["now"] - time.time() * 1000) < 5_000
    store.close()


def exercise_close_waits(make: Any) -> None:
    """``close`` waits for a transaction still running on another thread, then refuses new ones.

    A node stopping cancels the coroutine awaiting a step, not the step's thread: closing
    the connection under it crashed the node (SIGSEGV inside SQLite).
    """
    import threading

    from nodes.collect.db import StoreUnavailable

    db = make()
    inside, leave, seen = threading.Event(), threading.Event(), []

    def step() -> None:
        with db.tx() as cur:
            inside.set()
            leave.wait(10)
            seen.append(cur.execute("SELECT count(*) FROM reports").fetchone()[0])

    worker = threading.Thread(target=step)
    worker.start()
    assert inside.wait(10)
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # waiting for the step, not closing under it
    with pytest.raises(StoreUnavailable, match="closed"):  # no new step starts meanwhile
        with db.read():
            pass
    leave.set()
    worker.join(10)
    closer.join(10)
    assert seen == [0] and not closer.is_alive()
    with pytest.raises(StoreUnavailable, match="closed"):
        with db.tx():
            pass


def test_sqlite_close_waits_for_a_running_step(tmp_path: Path) -> None:
    exercise_close_waits(lambda: SqliteDb(tmp_path / "t.sqlite", SCHEMA))
