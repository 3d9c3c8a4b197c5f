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
