"""SIGKILL a writer during heavy appending, many times: nothing acknowledged is ever lost.

Each round starts a writer process (several threads appending, some with private parts, an
asyncio thread with many concurrent ``append_async`` waiters, explicit checkpoints and the
background signer in between), kills it with SIGKILL at a random moment, then checks that
every entry the writer had acknowledged (printed after the append returned) is present and
unchanged with its private part, the whole log verifies against its signed checkpoints
(the recovery signs the tail the kill left unsigned), and appending resumes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import DataUseRecord, Ledger, decode_leaf
from audit.checkpoint import log_verifier
from audit.export import ExportDir, export_store
from audit.policy import Policy
from audit.verify import verify_log

ORIGIN = "datafed/ledger/crash-test"
SEED = bytes(range(32))
ROUNDS = 10

WRITER = r"""
import asyncio, sys, threading
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from audit import DataUseRecord, Ledger

def rec(seed):
    return DataUseRecord(node="n", requester=f"r{seed}", requester_role="analyst",
        dataset="d", purpose="p", legal_basis="l", operation="query", protection="plain",
        request_digest="", result_digest="", decision="approved", reason="",
        epsilon=seed / 7, job_id=str(seed), time_ms=seed)

led = Ledger.open(Path(sys.argv[1]), sys.argv[2],
                  Ed25519PrivateKey.from_private_bytes(bytes(range(32))), sign_within_s=0.05)
base = int(sys.argv[3])
lock = threading.Lock()
print("ready", flush=True)

def work(w):
    j = 0
    while True:
        seeds = [base + w * 100000 + j + k for k in range(1 + j % 3)]
        j += len(seeds)
        idx = led.append_many([rec(s) for s in seeds], private=[{"s": str(s)} for s in seeds])
        with lock:
            for i, s in zip(idx, seeds):
                sys.stdout.write(f"{i} {s}\n")
            sys.stdout.flush()
        if j % 400 < 3:
            led.checkpoint()

async def waiter(w):
    j = 0
    while True:
        s = base + w * 100000 + j
        j += 1
        i = await led.append_async(rec(s), private={"s": str(s)})
        with lock:
            sys.stdout.write(f"{i} {s}\n")
            sys.stdout.flush()

async def many():
    await asyncio.gather(*(waiter(w) for w in range(10, 42)))

for w in range(5):
    threading.Thread(target=work, args=(w,), daemon=True).start()
threading.Thread(target=lambda: asyncio.run(many()), daemon=True).start()
threading.Event().wait()
"""


def rec(seed: int) -> DataUseRecord:
    return DataUseRecord(
        node="n",
        requester=f"r{seed}",
        requester_role="analyst",
        dataset="d",
        purpose="p",
        legal_basis="l",
        operation="query",
        protection="plain",
        request_digest="",
        result_digest="",
        decision="approved",
        reason="",
        epsilon=seed / 7,
        job_id=str(seed),
        time_ms=seed,
    )


def run_and_kill(db: Path, base: int, delay: float) -> dict[int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), ORIGIN, str(base)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[int, int] = {}
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2:  # a torn last line was never acknowledged
                acked[int(parts[0])] = int(parts[1])

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t.join()
    return acked


def test_sigkill_during_appends_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(1234)  # random kill points, reproducible
    db = tmp_path / "ledger.db"
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    policy = Policy({ORIGIN: log_verifier(ORIGIN, key)})
    all_acked: dict[int, int] = {}
    for r in range(ROUNDS):
        acked = run_and_kill(db, (r + 1) * 10_000_000, rng.uniform(0.05, 0.6))
        assert acked, "the writer acknowledged nothing before it was killed"
        all_acked.update(acked)
        # this round's acknowledgements in full, earlier rounds' by sample (the full-log
        # verification below covers them through the signed roots)
        check = dict(acked)
        check.update(rng.sample(sorted(all_acked.items()), min(300, len(all_acked))))
        # recovery: opens, tree and checkpoint agree; the unsigned tail is signed at close
        with Ledger.open(db, ORIGIN, key, sign_within_s=5) as led:
            size = led.head().size
            assert max(all_acked) < size
            for idx, seed in check.items():
                index, got = decode_leaf(led.leaves(idx, idx + 1)[0])
                assert (index, replace(got, private_commitment="")) == (idx, rec(seed))
                assert led.get_private(idx) == {"s": str(seed)}
            assert led.append(rec(r)) == size  # appending resumes
        out = tmp_path / f"export-{r}"
        export_store(db, out)
        report = verify_log(ExportDir(out), policy)
        assert report.ok, report.findings
    assert len(all_acked) > ROUNDS
