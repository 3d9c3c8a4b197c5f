"""Every tampering of issue 3 is detected by the verifier and named."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger
from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from audit.export import ExportDir, MemorySource, export_store
from audit.policy import Policy
from audit.verify import VerifyReport, save_state, verify_log
from audit.witness import WitnessStore

from .conftest import ORIGIN, make_record

LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
W1_KEY = Ed25519PrivateKey.from_private_bytes(b"\x12" * 32)
W2_KEY = Ed25519PrivateKey.from_private_bytes(b"\x13" * 32)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "ledger.db"
        self.ledger = Ledger.open(self.db, ORIGIN, LOG_KEY)
        v = [self.ledger.verifier]
        self.w1 = WitnessStore(tmp / "w1.db", "witness.test/w1", W1_KEY, v, clock=lambda: 1)
        self.w2 = WitnessStore(tmp / "w2.db", "witness.test/w2", W2_KEY, v, clock=lambda: 1)
        self.sizes = {self.w1.name: 0, self.w2.name: 0}
        self.tampered = False

    def grow(self, upto: int) -> None:
        n = self.ledger.head().size
        self.ledger.append_many([make_record(i) for i in range(n, upto)])
        note = self.ledger.checkpoint()
        sigs = []
        for w in (self.w1, self.w2):
            old = self.sizes[w.name]
            proof = self.ledger.consistency_proof(old, upto) if 0 < old < upto else []
            sigs.append(w.add_checkpoint(note, old, proof))
            self.sizes[w.name] = upto
        self.ledger.add_cosignatures(upto, sigs)

    def policy(self, quorum: int = 2, state: Path | None = None) -> Policy:
        return Policy(
            {ORIGIN: self.ledger.verifier}, (self.w1.verifier, self.w2.verifier), quorum, state
        )

    def export(self, name: str = "export") -> Path:
        self.ledger.close()
        out = export_store(self.db, self.tmp / name)
        if not self.tampered:  # a tampered store is (rightly) refused by Ledger.open
            self.ledger = Ledger.open(self.db, ORIGIN, LOG_KEY)
        return out

    def sql(self, *statements: str) -> None:
        self.ledger.close()
        self.tampered = True
        db = sqlite3.connect(self.db)
        for s in statements:
            db.execute(s)
        db.commit()
        db.close()


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    for size in (10, 25, 40):
        w.grow(size)
    return w


def check(path: Path, policy: Policy, **kw: object) -> VerifyReport:
    return verify_log(ExportDir(path), policy, **kw)  # type: ignore[arg-type]


def codes(report: VerifyReport) -> set[str]:
    return {f.code for f in report.findings}


def test_untouched_log_verifies(world: World) -> None:
    report = check(world.export(), world.policy(), deep=True)
    assert report.ok, report.findings
    assert report.entries == 40
    assert [c.size for c in report.checkpoints] == [10, 25, 40]
    assert report.published == [10, 25, 40]


@pytest.mark.parametrize("offset", [0, 31, 35, 40, 60, -30, -12, -1])
def test_flipped_bit_in_stored_entry(world: World, offset: int) -> None:
    leaf = bytearray(world.ledger.leaves(7, 8)[0])
    leaf[offset] ^= 0x04
    world.sql(f"UPDATE entries SET leaf = x'{leaf.hex()}' WHERE idx = 7")
    report = check(world.export(), world.policy(), deep=True)
    assert any(f.index == 7 for f in report.findings), report.findings
    assert "entry-modified" in codes(report)
    assert {f.size for f in report.findings if f.code == "root-mismatch"} == {10, 25, 40}


def test_flipped_bit_in_export_file(world: World) -> None:
    out = world.export()
    data = bytearray((out / "entries.bin").read_bytes())
    data[len(data) // 2] ^= 1
    (out / "entries.bin").write_bytes(bytes(data))
    report = check(out, world.policy())
    assert "root-mismatch" in codes(report) and "entry-modified" in codes(report)


def test_deleted_entry(world: World) -> None:
    world.sql("DELETE FROM entries WHERE idx = 12")
    report = check(world.export(), world.policy())
    assert [f.index for f in report.findings if f.code == "entry-deleted"] == [12]
    assert {f.size for f in report.findings if f.code == "log-truncated"} == {40}
    assert {f.size for f in report.findings if f.code == "root-mismatch"} == {25}


def test_reordered_entries(world: World) -> None:
    a, b = world.ledger.store.get_entries(3, 5)
    world.sql(
        f"UPDATE entries SET leaf = x'{b[1].hex()}', hash = x'{b[2].hex()}' WHERE idx = 3",
        f"UPDATE entries SET leaf = x'{a[1].hex()}', hash = x'{a[2].hex()}' WHERE idx = 4",
    )
    report = check(world.export(), world.policy())
    assert [f.index for f in report.findings if f.code == "entries-reordered"] == [3]
    assert "root-mismatch" in codes(report)


def test_truncated_log(world: World) -> None:
    world.sql("DELETE FROM entries WHERE idx >= 30")
    report = check(world.export(), world.policy())
    assert [f.size for f in report.findings if f.code == "log-truncated"] == [40]
    assert "root-mismatch" not in codes(report)


def test_torn_export_file(world: World) -> None:
    out = world.export()
    data = (out / "entries.bin").read_bytes()
    (out / "entries.bin").write_bytes(data[:-7])
    report = check(out, world.policy())
    assert "log-truncated" in codes(report)


def test_rolled_back_log(world: World, tmp_path: Path) -> None:
    old = world.export("old")  # size 40
    world.grow(55)
    state = tmp_path / "state.json"
    policy = world.policy(state=state)
    new = check(world.export("new"), policy)
    assert new.ok and new.latest is not None
    save_state(state, ORIGIN, new.latest)
    report = check(old, policy)
    assert [f.size for f in report.findings if f.code == "log-rolled-back"] == [55]


def test_rewritten_history(world: World, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    save_state(state, ORIGIN, Checkpoint(ORIGIN, 20, b"\x00" * 32))
    report = check(world.export(), world.policy(state=state))
    assert [f.size for f in report.findings if f.code == "log-rewritten"] == [20]


def test_forged_checkpoint(world: World) -> None:
    out = world.export()
    note = (out / "checkpoints" / "25.note").read_text()
    lines = note.split("\n")
    lines[2] = "A" * 43 + "="  # another root, same signature
    (out / "checkpoints" / "25.note").write_text("\n".join(lines))
    report = check(out, world.policy())
    assert [f.size for f in report.findings if f.code == "checkpoint-bad-signature"] == [25]


def test_swapped_checkpoint_of_another_log(world: World, tmp_path: Path) -> None:
    out = world.export()
    other = sign_checkpoint(Checkpoint("datafed.test/other", 25, b"\x01" * 32), LOG_KEY)
    (out / "checkpoints" / "25.note").write_text(other)
    report = check(out, world.policy())
    assert [f.size for f in report.findings if f.code == "checkpoint-wrong-origin"] == [25]


def test_checkpoint_signed_by_another_key(world: World) -> None:
    out = world.export()
    root = world.ledger.root_at(40)
    fake = sign_checkpoint(Checkpoint(ORIGIN, 40, root), Ed25519PrivateKey.generate())
    (out / "checkpoints" / "40.note").write_text(fake)
    report = check(out, world.policy())
    assert [f.size for f in report.findings if f.code == "checkpoint-wrong-key"] == [40]


def test_bad_cosignature(world: World) -> None:
    out = world.export()
    path = out / "checkpoints" / "10.note"
    note = path.read_text()
    last = note.rstrip("\n").split("\n")[-1]
    bad = last[:-6] + ("AAAA" if last[-6:-2] != "AAAA" else "BBBB") + last[-2:]
    path.write_text(note.replace(last, bad))
    report = check(out, world.policy())
    assert [f.size for f in report.findings if f.code == "cosignature-invalid"] == [10]


def test_quorum_not_met(world: World) -> None:
    world.ledger.close()
    out = world.tmp / "bare"
    export_store(world.db, out)
    for p in (out / "checkpoints").iterdir():
        note = p.read_text()
        p.write_text(note.split("\n\n")[0] + "\n\n" + note.split("\n\n")[1].split("\n")[0] + "\n")
    report = check(out, world.policy(quorum=1))
    assert "quorum-not-met" in codes(report)
    assert check(out, world.policy(quorum=0)).ok


def test_unknown_origin(world: World) -> None:
    policy = Policy({"datafed.test/other": world.ledger.verifier})
    assert codes(check(world.export(), policy)) == {"unknown-origin"}


def test_fork_shown_to_two_witnesses(world: World) -> None:
    """The log signs two different trees of size 50 and shows one to each witness."""
    base = world.ledger.leaves(0, 40)
    world.ledger.append_many([make_record(i) for i in range(40, 50)])
    honest_note = world.ledger.checkpoint()
    honest = open_checkpoint(honest_note, world.ledger.verifier).checkpoint
    sig1 = world.w1.add_checkpoint(honest_note, 40, world.ledger.consistency_proof(40, 50))
    # the forked tree: same first 40 entries, different last 10
    fork_led = Ledger.open(world.tmp / "fork.db", ORIGIN, LOG_KEY)
    fork_led.append_many([make_record(i) for i in range(40)])
    assert fork_led.leaves(0, 40) == base
    fork_led.append_many([make_record(i, purpose="fraud") for i in range(40, 50)])
    fork_note = fork_led.checkpoint()
    sig2 = world.w2.add_checkpoint(fork_note, 40, fork_led.consistency_proof(40, 50))
    assert sig1 and sig2  # each witness alone accepts its view
    world.ledger.add_cosignatures(50, [sig1])
    # 1) a witness shown the other view refuses it and keeps evidence
    with pytest.raises(Exception, match="fork"):
        world.w1.add_checkpoint(fork_note, 50, [])
    [ev] = world.w1.evidence()
    assert ev.size == 50
    # 2) the auditor who sees both checkpoints names the fork
    out = world.export()
    exp = ExportDir(out)
    seen = [*exp.checkpoint_notes(), ("from witness 2", fork_note.encode())]
    report = verify_log(MemorySource(exp.leaves(), seen), world.policy(quorum=2))
    assert [f.size for f in report.findings if f.code == "fork"] == [50]
    assert report.latest is not None and report.latest.size == 50
    assert honest.size == 50
    fork_led.close()


def test_export_refuses_non_empty_dir(world: World) -> None:
    out = world.export()
    with pytest.raises(ValueError, match="exists and is not empty"):
        export_store(world.db, out)
    shutil.rmtree(out)
