from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger, WitnessRefusal
from audit.checkpoint import Checkpoint, add_signatures, open_checkpoint, sign_checkpoint
from audit.witness import WitnessStore, read_newest

from .conftest import ORIGIN, make_record

WKEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
OKEY = Ed25519PrivateKey.from_private_bytes(b"\x06" * 32)


@pytest.fixture
def witness(tmp_path: Path, ledger: Ledger) -> WitnessStore:
    w = WitnessStore(tmp_path / "w.db", "witness.test/w", WKEY, [ledger.verifier], clock=lambda: 77)
    yield w
    w.close()


def cosign_now(ledger: Ledger, w: WitnessStore, old: int) -> str:
    note = ledger.checkpoint()
    size = ledger.head().size
    proof = ledger.consistency_proof(old, size) if 0 < old < size else []
    sig = w.add_checkpoint(note, old, proof)
    return ledger.add_cosignatures(size, [sig])


def test_cosigns_consistent_checkpoints_and_persists(
    ledger: Ledger, witness: WitnessStore, tmp_path: Path
) -> None:
    ledger.append_many([make_record(i) for i in range(3)])
    note = cosign_now(ledger, witness, 0)
    assert open_checkpoint(note, ledger.verifier).cosigners([witness.verifier]) == {witness.name}
    ledger.append_many([make_record(i) for i in range(3, 10)])
    cosign_now(ledger, witness, 3)
    cosign_now(ledger, witness, 10)  # same size again: empty proof, same root
    latest = witness.latest(ORIGIN)
    assert latest is not None and latest[:2] == (10, ledger.head().root_hash)
    witness.close()
    again = WitnessStore(tmp_path / "w.db", "witness.test/w", WKEY, [ledger.verifier])
    assert again.latest(ORIGIN) == latest
    again.close()


def test_refusals(ledger: Ledger, witness: WitnessStore) -> None:
    ledger.append_many([make_record(i) for i in range(4)])
    cosign_now(ledger, witness, 0)
    ledger.append_many([make_record(i) for i in range(4, 9)])
    note = ledger.checkpoint()
    with pytest.raises(WitnessRefusal) as e:
        witness.add_checkpoint(note, 2, ledger.consistency_proof(2, 9))
    assert (e.value.reason, e.value.witness_size) == ("conflict", 4)
    with pytest.raises(WitnessRefusal) as e:
        witness.add_checkpoint(note, 4, ledger.consistency_proof(3, 9))
    assert e.value.reason == "bad-proof"
    with pytest.raises(WitnessRefusal) as e:
        witness.add_checkpoint(note.replace("\n9\n", "\n8\n"), 4, [])
    assert e.value.reason == "bad-signature"
    other = sign_checkpoint(Checkpoint("datafed.test/x", 1, bytes(32)), WKEY)
    with pytest.raises(WitnessRefusal) as e:
        witness.add_checkpoint(other, 0, [])
    assert e.value.reason == "unknown-origin"
    for bad in (b"\xff", "not a note\n"):
        with pytest.raises(WitnessRefusal) as e:
            witness.add_checkpoint(bad, 4, [])
        assert e.value.reason == "bad-request"
    with pytest.raises(WitnessRefusal, match="bad-request"):
        witness.add_checkpoint(note, -1, [])
    latest = witness.latest(ORIGIN)
    assert latest is not None and latest[0] == 4  # nothing written by refusals
    assert witness.evidence() == []


def test_fork_is_refused_and_kept_as_evidence(
    ledger: Ledger, witness: WitnessStore, key: Ed25519PrivateKey
) -> None:
    ledger.append_many([make_record(i) for i in range(5)])
    honest = cosign_now(ledger, witness, 0)
    # the log's key signs a second, different tree of the same size (a split view)
    fork = sign_checkpoint(Checkpoint(ORIGIN, 5, b"\x07" * 32), key)
    with pytest.raises(WitnessRefusal) as e:
        witness.add_checkpoint(fork, 5, [])
    assert (e.value.reason, e.value.witness_size) == ("fork", 5)
    [ev] = witness.evidence()
    assert (ev.origin, ev.size) == (ORIGIN, 5)
    assert ev.note_b == fork
    text = honest[: honest.rfind("\n\n") + 1]
    assert ev.note_a.startswith(text)
    assert add_signatures(fork, []) == fork


def test_the_newest_cosigned_note_per_log(
    ledger: Ledger, witness: WitnessStore, tmp_path: Path
) -> None:
    """The witness keeps the note it vouches for: the log's signature and its cosignature."""
    other = WitnessStore(tmp_path / "o.db", "witness.test/o", OKEY, [ledger.verifier])
    ledger.append_many([make_record(i) for i in range(4)])
    cosign_now(ledger, other, 0)  # the note the log sends next carries another cosignature
    cosign_now(ledger, witness, 0)
    ledger.append_many([make_record(i) for i in range(4, 9)])
    cosign_now(ledger, witness, 4)
    assert witness.newest(["datafed.test/none"]) == {}
    newest = witness.newest()
    opened = open_checkpoint(newest[ORIGIN], ledger.verifier)
    assert opened.checkpoint.size == 9 and len(opened.signatures) == 2  # no other witness's
    assert opened.cosigners([witness.verifier, other.verifier]) == {witness.name}
    assert opened.signatures[1].signature[:8] == (77).to_bytes(8, "big")  # its clock
    assert read_newest(tmp_path / "w.db") == (newest, [])  # offline, without the key
    other.close()


def test_a_state_file_from_before_cosigned_notes_were_kept(
    ledger: Ledger, witness: WitnessStore, tmp_path: Path
) -> None:
    ledger.append_many([make_record(i) for i in range(6)])
    cosign_now(ledger, witness, 0)
    witness.close()
    legacy = tmp_path / "legacy.db"
    shutil.copy(tmp_path / "w.db", legacy)
    with sqlite3.connect(legacy) as db:
        db.execute("ALTER TABLE cosigned DROP COLUMN witnessed")
    assert read_newest(legacy) == ({}, [ORIGIN])  # offline there is nothing to show for it
    with pytest.raises(ValueError, match="is not a witness state database"):
        read_newest(tmp_path / "ledger.db")
    store = WitnessStore(legacy, "witness.test/w", WKEY, [ledger.verifier])  # migrates
    newest = store.newest()  # cosigns its newest checkpoint again, and keeps it
    store.close()
    assert read_newest(legacy) == (newest, [])
    opened = open_checkpoint(newest[ORIGIN], ledger.verifier)
    assert opened.checkpoint.size == 6 and opened.cosigners([witness.verifier])
