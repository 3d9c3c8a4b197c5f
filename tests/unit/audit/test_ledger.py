from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import DataUseRecord, Ledger, LedgerError, decode_leaf
from audit.merkle import hash_leaf

from .conftest import ORIGIN, make_record


def naive_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hash_leaf(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def test_append_returns_indexes_and_head_matches_naive(ledger: Ledger) -> None:
    assert ledger.head().size == 0
    assert ledger.head().root_hash == hashlib.sha256(b"").digest()
    assert ledger.append(make_record(0)) == 0
    assert ledger.append_many([make_record(1), make_record(2)]) == [1, 2]
    assert ledger.append_many([]) == []
    head = ledger.head()
    assert (head.origin, head.size) == (ORIGIN, 3)
    leaves = ledger.store.get_leaves(0, 3)
    assert head.root_hash == naive_mth(leaves)
    assert [decode_leaf(leaf) for leaf in leaves] == [(i, make_record(i)) for i in range(3)]
    assert ledger.get_record(1) == make_record(1)


def test_concurrent_appends_get_distinct_indexes(ledger: Ledger) -> None:
    results: dict[int, DataUseRecord] = {}
    lock = threading.Lock()

    def worker(w: int) -> None:
        for j in range(50):
            rec = make_record(w * 1000 + j)
            idx = ledger.append(rec)
            with lock:
                results[idx] = rec

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(400))
    assert ledger.head().size == 400
    leaves = ledger.store.get_leaves(0, 400)
    for idx, leaf in enumerate(leaves):
        assert decode_leaf(leaf) == (idx, results[idx])
    assert ledger.head().root_hash == naive_mth(leaves)


def test_reopen_restores_tree(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path, ORIGIN, key) as led:
        led.append_many([make_record(i) for i in range(13)])
        head = led.head()
    with Ledger.open(path, ORIGIN, key) as led:
        assert led.head() == head
        assert led.append(make_record(13)) == 13
        assert led.head().root_hash == naive_mth(led.store.get_leaves(0, 14))


def test_reopen_with_other_origin_or_key_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    Ledger.open(path, ORIGIN, key).close()
    with pytest.raises(ValueError, match="belongs to another origin"):
        Ledger.open(path, "datafed.test/other", key)
    with pytest.raises(ValueError, match="belongs to another public_key"):
        Ledger.open(path, ORIGIN, Ed25519PrivateKey.generate())


def test_second_writer_refused(ledger: Ledger, tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerError, match="open by another writer"):
        Ledger.open(tmp_path / "ledger.db", ORIGIN, key)


def test_closed_ledger_refuses(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "l.db", ORIGIN, key)
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.append(make_record())


@pytest.mark.parametrize(
    ("origin", "exc"), [("", ValueError), ("a b", ValueError), ("a+b", ValueError), (3, TypeError)]
)
def test_bad_origin(tmp_path: Path, key: Ed25519PrivateKey, origin: object, exc: type) -> None:
    with pytest.raises(exc):
        Ledger.open(tmp_path / "l.db", origin, key)  # type: ignore[arg-type]
    assert not (tmp_path / "l.db").exists()


def test_append_rejects_non_records(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match="expected DataUseRecord, got dict"):
        ledger.append({})  # type: ignore[arg-type]
    assert ledger.head().size == 0


async def test_async_appends_many_waiters(ledger: Ledger) -> None:
    import asyncio

    async def one(i: int) -> tuple[int, DataUseRecord]:
        rec = make_record(i)
        return await ledger.append_async(rec), rec

    def threaded() -> list[int]:
        return [ledger.append(make_record(10_000 + j)) for j in range(30)]

    thread_job = asyncio.to_thread(threaded)
    results = await asyncio.gather(*(one(i) for i in range(300)), thread_job)
    pairs = results[:-1]
    thread_idx = results[-1]
    assert isinstance(thread_idx, list)
    indexes = sorted([i for i, _ in pairs] + thread_idx)  # type: ignore[misc]
    assert indexes == list(range(330))
    leaves = ledger.store.get_leaves(0, 330)
    for idx, rec in pairs:  # type: ignore[misc]
        assert decode_leaf(leaves[idx]) == (idx, rec)
    assert ledger.head().root_hash == naive_mth(leaves)
    assert await ledger.append_many_async([]) == []


async def test_cancelled_async_waiters_do_not_stall_the_log(ledger: Ledger) -> None:
    import asyncio
    import random

    rng = random.Random(5)
    kept: list[int] = []
    for _ in range(25):  # cancel at random moments, including right after a hand-over
        tasks = [asyncio.create_task(ledger.append_async(make_record(i))) for i in range(60)]
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))
        for t in rng.sample(tasks, 20):
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        kept += [d for d in done if isinstance(d, int)]
    assert kept and len(set(kept)) == len(kept)
    # everything queued is committed eventually and the log keeps working
    assert await asyncio.wait_for(ledger.append_async(make_record(999)), timeout=30) >= len(kept)
    size = ledger.head().size
    assert ledger.head().root_hash == naive_mth(ledger.store.get_leaves(0, size))


def test_store_backed_proofs_match_rfc(ledger: Ledger) -> None:
    from .test_merkle import path, subproof

    ledger.append_many([make_record(i) for i in range(70)])
    leaves = ledger.store.get_leaves(0, 70)
    for n in (1, 2, 15, 16, 17, 33, 64, 70):
        assert ledger.root_at(n) == naive_mth(leaves[:n])
        for i in range(n):
            assert ledger.inclusion_proof(i, n) == path(i, leaves[:n])
        for m in range(1, n + 1):
            assert ledger.consistency_proof(m, n) == subproof(m, leaves[:n], True)


# ------------------------------------------------------------------ private parts


def test_private_parts_are_committed_and_stored_beside_the_log(ledger: Ledger) -> None:
    from audit.private import commitment, decode_opening

    secret = {"groups_released": "3", "groups_suppressed": "1"}
    i = ledger.append(make_record(0), private=secret)
    j = ledger.append(make_record(1), private=secret)
    k = ledger.append(make_record(2))
    opening = ledger.private_parts(0, 3)
    assert sorted(opening) == [i, j]
    for idx in (i, j):
        rec = ledger.get_record(idx)
        assert rec.private_commitment == commitment(opening[idx])
        assert decode_opening(opening[idx])[1] == secret
        assert "3" not in rec.details.values()
    # a fresh salt per entry: equal private parts do not give equal commitments
    assert ledger.get_record(i).private_commitment != ledger.get_record(j).private_commitment
    assert ledger.get_record(k).private_commitment == "" and ledger.get_private(k) is None
    assert ledger.get_private(i) == secret
    # what an analyst receives (a receipt) holds the leaf only: no salt, no private part
    receipt = ledger.receipt([i])
    assert opening[i][:16] not in receipt.entries[0].leaf
    assert b"groups_released" not in receipt.entries[0].leaf


async def test_private_parts_async_and_many(ledger: Ledger) -> None:
    idx = await ledger.append_many_async(
        [make_record(0), make_record(1)], private=[None, {"rows": "7"}]
    )
    assert await ledger.append_async(make_record(2), private={"rows": "0"}) == 2
    assert ledger.get_private(idx[0]) is None
    assert [ledger.get_private(i) for i in (1, 2)] == [{"rows": "7"}, {"rows": "0"}]
    assert ledger.append_many([make_record(3)], private=[{"size": "12"}]) == [3]
    assert ledger.get_private(3) == {"size": "12"}


@pytest.mark.parametrize(
    ("records", "private", "exc", "message"),
    [
        ([make_record(0, private_commitment="ab" * 32)], None, ValueError, "set by the ledger"),
        ([make_record(0)], [None, None], ValueError, "2 private parts for 1 records"),
        ([make_record(0)], [{"k": 5}], TypeError, "must be a str"),
        ([make_record(0)], [{str(i): "" for i in range(65)}], ValueError, "at most 64"),
    ],
)
def test_bad_private_parts_write_nothing(
    ledger: Ledger, records: list[DataUseRecord], private: object, exc: type, message: str
) -> None:
    with pytest.raises(exc, match=message):
        ledger.append_many(records, private=private)  # type: ignore[arg-type]
    assert ledger.head().size == 0 and ledger.private_parts(0, 10) == {}


# ------------------------------------------------------------------ committer


async def test_cancelled_waiter_entry_is_durable_and_acknowledged_to_nobody(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    import asyncio

    path = tmp_path / "c.db"
    led = Ledger.open(path, ORIGIN, key)
    task = asyncio.create_task(led.append_async(make_record(41), private={"n": "1"}))
    await asyncio.sleep(0)  # the task ran up to its first suspension: the entry is queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await led.append_async(make_record(42)) == 1  # the log did not stall
    led.close()
    with Ledger.open(path, ORIGIN, key) as again:  # and the cancelled entry is on disk
        assert again.get_record(0) == _with_commitment(make_record(41), again.get_record(0))
        assert again.get_private(0) == {"n": "1"}


def _with_commitment(rec: DataUseRecord, stored: DataUseRecord) -> DataUseRecord:
    import dataclasses

    return dataclasses.replace(rec, private_commitment=stored.private_commitment)


def test_failed_commit_fails_its_callers_and_the_log_goes_on(ledger: Ledger) -> None:
    import sqlite3

    real = ledger.store.append
    calls = []

    def broken(*args: object, **kw: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real(*args, **kw)  # type: ignore[arg-type]

    ledger.store.append = broken  # type: ignore[method-assign]
    with pytest.raises(LedgerError, match="append failed"):
        ledger.append(make_record(0))
    assert ledger.head().size == 0
    assert ledger.append(make_record(1)) == 0
    assert ledger.get_record(0) == make_record(1)


def test_background_signer_signs_within_the_bound(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    import time

    from audit.checkpoint import open_checkpoint

    path = tmp_path / "s.db"
    with Ledger.open(path, ORIGIN, key, sign_within_s=0.2) as led:
        led.append(make_record(0, decision="denied"))
        deadline = time.monotonic() + 10
        while not led.checkpoints() and time.monotonic() < deadline:
            time.sleep(0.02)
        notes = led.checkpoints()
        assert notes and open_checkpoint(notes[-1], led.verifier).checkpoint.size == 1
        led.append_many([make_record(1), make_record(2)])
    # closing signed the last entries (no unsigned tail left behind)
    with Ledger.open(path, ORIGIN, key) as led:
        assert open_checkpoint(led.checkpoints()[-1], led.verifier).checkpoint.size == 3
        led.append(make_record(3))  # no signer: this one stays unsigned
    with Ledger.open(path, ORIGIN, key, sign_within_s=60) as led:
        deadline = time.monotonic() + 10  # an unsigned tail found at open is signed at once
        while len(led.checkpoints()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert open_checkpoint(led.checkpoints()[-1], led.verifier).checkpoint.size == 4
    with pytest.raises(ValueError, match="sign_within_s"):
        Ledger.open(path, ORIGIN, key, sign_within_s=0)
