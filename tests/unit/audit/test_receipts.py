from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import InvalidReceipt, Ledger, LedgerError
from audit.checkpoint import cosign, open_checkpoint, witness_verifier
from audit.merkle import hash_leaf, verify_consistency, verify_inclusion
from audit.receipts import Receipt, verify_receipt

from .conftest import ORIGIN, make_record

W = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
WV = witness_verifier("witness.test/w", W)


def test_checkpoint_proofs_and_stored_history(ledger: Ledger) -> None:
    ledger.append_many([make_record(i) for i in range(5)])
    n5 = ledger.checkpoint()
    assert ledger.checkpoint() == n5  # same size: same stored note
    ledger.append_many([make_record(i) for i in range(5, 11)])
    n11 = ledger.checkpoint()
    cp5 = open_checkpoint(n5, ledger.verifier).checkpoint
    cp11 = open_checkpoint(n11, ledger.verifier).checkpoint
    assert (cp5.size, cp11.size) == (5, 11)
    assert cp11.root_hash == ledger.head().root_hash
    assert ledger.checkpoints() == [n5, n11]
    verify_consistency(5, 11, ledger.consistency_proof(5), cp5.root_hash, cp11.root_hash)
    leaf = ledger.leaves(3, 4)[0]
    verify_inclusion(hash_leaf(leaf), 3, 5, ledger.inclusion_proof(3, 5), cp5.root_hash)
    assert ledger.root_at(5) == cp5.root_hash
    with pytest.raises(ValueError, match=r"tree size must be in \[0, 11\], got 12"):
        ledger.inclusion_proof(0, 12)


def test_cosignatures_are_stored(ledger: Ledger) -> None:
    ledger.append(make_record())
    note = ledger.checkpoint()
    cp = open_checkpoint(note, ledger.verifier).checkpoint
    merged = ledger.add_cosignatures(1, [cosign(cp.text(), WV.name, W, 100)])
    assert ledger.checkpoint() == merged
    assert open_checkpoint(merged, ledger.verifier).cosigners([WV]) == {WV.name}
    with pytest.raises(ValueError, match="no checkpoint of size 7"):
        ledger.add_cosignatures(7, [])


def test_receipt_roundtrip_and_tampering(ledger: Ledger) -> None:
    idx = ledger.append_many([make_record(i) for i in range(9)])
    receipt = ledger.receipt([idx[2], idx[7]])
    pub = ledger.public_key
    recs = verify_receipt(receipt, ORIGIN, pub)
    assert recs == [make_record(2), make_record(7)]
    e0 = receipt.entries[0]
    bad_leaf = bytearray(e0.leaf)
    bad_leaf[-20] ^= 1
    tampered = [
        dataclasses.replace(receipt, entries=(dataclasses.replace(e0, leaf=bytes(bad_leaf)),)),
        dataclasses.replace(receipt, entries=(dataclasses.replace(e0, index=3),)),
        dataclasses.replace(receipt, entries=(dataclasses.replace(e0, proof=e0.proof[1:]),)),
        dataclasses.replace(receipt, checkpoint=receipt.checkpoint.replace("\n9\n", "\n8\n")),
        dataclasses.replace(receipt, entries=()),
    ]
    for r in tampered:
        with pytest.raises(InvalidReceipt):
            verify_receipt(r, ORIGIN, pub)
    with pytest.raises(InvalidReceipt):
        verify_receipt(receipt, ORIGIN, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(InvalidReceipt):
        verify_receipt(receipt, "datafed.test/other", pub)
    with pytest.raises(InvalidReceipt):
        verify_receipt(receipt, ORIGIN, pub, witnesses=[WV], quorum=1)


def test_receipt_with_quorum(ledger: Ledger) -> None:
    ledger.append_many([make_record(i) for i in range(3)])
    note = ledger.checkpoint()
    cp = open_checkpoint(note, ledger.verifier).checkpoint
    ledger.add_cosignatures(3, [cosign(cp.text(), WV.name, W, 5)])
    receipt = ledger.receipt([1])
    assert verify_receipt(receipt, ORIGIN, ledger.public_key, witnesses=[WV], quorum=1) == [
        make_record(1)
    ]


def test_receipt_bad_arguments(ledger: Ledger) -> None:
    ledger.append(make_record())
    with pytest.raises(ValueError, match="a receipt covers 1 to 1024 entries"):
        ledger.receipt([])
    with pytest.raises(ValueError, match=r"entry index must be in \[0, 1\), got 4"):
        ledger.receipt([4])
    with pytest.raises(ValueError, match="quorum must be >= 0"):
        verify_receipt(Receipt("", ()), ORIGIN, ledger.public_key, quorum=-1)


def test_rolled_back_store_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path, ORIGIN, key) as led:
        led.append_many([make_record(i) for i in range(4)])
        led.checkpoint()
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("DELETE FROM entries WHERE idx = 3")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="does not match its checkpoint at size 4"):
        Ledger.open(path, ORIGIN, key)
