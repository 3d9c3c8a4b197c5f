"""Honest verification against an operator who edits its own ledger (issue 9 #7, #8).

Attacks, each a test: dropping the unsigned tail of an export, re-signing the log with the
denials removed, swapping or withholding private parts, and pinning a key the auditor never
received (``vkey`` reads certificates, checked against the CA).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger, WitnessRefusal
from audit.export import export_store, read_private
from audit.private import encode_opening
from audit.witness import WitnessStore

from .conftest import make_record, run_cli

ORIGIN = "datafed/ledger/water-north"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x51" * 32)
WKEY = Ed25519PrivateKey.from_private_bytes(b"\x52" * 32)


run = run_cli


def policies(root: Path, led: Ledger, witness: WitnessStore) -> tuple[str, str]:
    q0, q1 = root / "q0.toml", root / "q1.toml"
    q0.write_text(f'logs = ["{led.verifier.vkey()}"]\n')
    q1.write_text(
        f'quorum = 1\nlogs = ["{led.verifier.vkey()}"]\nwitnesses = ["{witness.verifier.vkey()}"]\n'
    )
    return str(q0), str(q1)


def witness_state(root: Path, capsys) -> list[str]:  # type: ignore[no-untyped-def]
    """Export the witness's state (``datafed-audit witness-export --db``): verify options."""
    code, out, _ = run(["witness-export", str(root / "w.json"), "--db", str(root / "w.db")], capsys)
    assert code == 0, out
    return ["--witness-state", str(root / "w.json")]


def history(i: int) -> object:
    return make_record(i, decision="denied" if i % 4 == 3 else "approved", node="water-north")


def test_operator_rewrite_without_denials(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    led = Ledger.open(tmp_path / "real.db", ORIGIN, KEY)
    witness = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", WKEY, [led.verifier])
    records = [history(i) for i in range(20)]
    led.append_many(records)  # type: ignore[arg-type]
    note = led.checkpoint()
    led.add_cosignatures(20, [witness.add_checkpoint(note, 0, [])])
    q0, q1 = policies(tmp_path, led, witness)
    led.close()
    # the operator rebuilds its log from scratch without the denials and signs it anew
    fake = Ledger.open(tmp_path / "fake.db", ORIGIN, KEY)
    fake.append_many([r for r in records if r.decision != "denied"])  # type: ignore[attr-defined]
    fake_note = fake.checkpoint()
    fake.close()
    export_store(tmp_path / "fake.db", tmp_path / "fake")
    exp = str(tmp_path / "fake")
    # without witnesses the rewrite is undetectable, so verify refuses to pretend otherwise
    code, out, err = run(["verify", exp, "-p", q0], capsys)
    assert code == 2 and "witness quorum 0: an operator could rewrite its log" in err
    code, out, err = run(["verify", exp, "-p", q0, "--no-witnesses"], capsys)
    assert code == 0 and "OK datafed/ledger/water-north: 15 entries" in out
    assert "witness quorum: 0 of 0 required — NOT witnessed" in out
    assert "can rewrite history undetectably" in err
    # with a quorum-1 policy the rewrite has no cosignature: detected
    code, out, _ = run(["verify", exp, "-p", q1], capsys)
    assert code == 1 and "FAIL quorum-not-met" in out
    # ... and the witness's newest checkpoint (size 20) is longer than the rewritten log
    code, out, _ = run(["verify", exp, "-p", q1, *witness_state(tmp_path, capsys)], capsys)
    held = "witness datafed/witness/regulator holds size 20 root "
    assert code == 1 and f"FAIL log-behind-witness at checkpoint size 20: {held}" in out
    # ... and the real witness refuses to cosign it (it holds size 20 with another root)
    with pytest.raises(WitnessRefusal) as refused:
        witness.add_checkpoint(fake_note, 0, [])
    assert refused.value.reason == "conflict" and refused.value.witness_size == 20
    with pytest.raises(WitnessRefusal, match="bad-request"):  # 15 entries cannot extend 20
        witness.add_checkpoint(fake_note, 20, [])
    # keeping the old cosigned checkpoint beside the rewritten entries does not help either
    real = export_store(tmp_path / "real.db", tmp_path / "real")
    shutil.copy(real / "checkpoints" / "20.note", tmp_path / "fake" / "checkpoints" / "20.note")
    code, out, _ = run(["verify", exp, "-p", q1], capsys)
    assert code == 1 and "FAIL log-truncated at checkpoint size 20" in out
    witness.close()


def test_dropped_unsigned_tail_is_detected(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "l.db"
    led = Ledger.open(db, ORIGIN, KEY, sign_within_s=0.1)
    witness = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", WKEY, [led.verifier])
    led.append_many([history(i) for i in range(12)])  # type: ignore[misc]
    note = led.checkpoint()
    led.add_cosignatures(12, [witness.add_checkpoint(note, 0, [])])
    _, q1 = policies(tmp_path, led, witness)
    led.append_many([make_record(i, decision="denied") for i in (12, 13)])  # two late denials
    deadline = time.monotonic() + 10
    while len(led.checkpoints()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the node signs them within its bound, without being asked
    ws = witness_state(tmp_path, capsys)
    export_store(db, tmp_path / "exp")
    led.close()
    exp = tmp_path / "exp"
    code, out, _ = run(["verify", str(exp), "-p", q1, *ws], capsys)
    assert code == 0 and "14 entries, 2 checkpoint(s) up to size 14" in out
    assert "met only up to size 12: entries 12..13 are NOT witnessed" in out
    # the operator drops the two denials from the export: the signed size 14 gives it away
    data = (exp / "entries.bin").read_bytes()
    leaves, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        leaves.append(data[pos : pos + 4 + n])
        pos += 4 + n
    (exp / "entries.bin").write_bytes(b"".join(leaves[:12]))
    (exp / "hashes.bin").write_bytes((exp / "hashes.bin").read_bytes()[: 12 * 32])
    code, out, _ = run(["verify", str(exp), "-p", q1, *ws], capsys)
    assert code == 1 and "FAIL log-truncated at checkpoint size 14" in out
    witness.close()


def test_unsigned_tail_fails_unless_allowed(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "l.db"
    led = Ledger.open(db, ORIGIN, KEY)  # no background signer: the tail stays unsigned
    witness = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", WKEY, [led.verifier])
    led.append_many([history(i) for i in range(8)])  # type: ignore[misc]
    led.add_cosignatures(8, [witness.add_checkpoint(led.checkpoint(), 0, [])])
    led.append_many([make_record(i, decision="denied") for i in (8, 9, 10)])
    _, q1 = policies(tmp_path, led, witness)
    led.close()
    witness.close()
    export_store(db, tmp_path / "exp")
    ws = witness_state(tmp_path, capsys)
    code, out, _ = run(["verify", str(tmp_path / "exp"), "-p", q1, *ws], capsys)
    assert code == 1
    assert "FAIL unsigned-tail at entry 8: 3 entries after the newest checkpoint (size 8)" in out
    code, out, err = run(
        ["verify", str(tmp_path / "exp"), "-p", q1, "--allow-unsigned-tail", *ws], capsys
    )
    assert code == 0 and "warning: 3 entries after the newest checkpoint" in err


def test_private_parts_are_checked_against_their_commitments(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "l.db"
    led = Ledger.open(db, ORIGIN, KEY)
    witness = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", WKEY, [led.verifier])
    for i in range(6):
        led.append(make_record(i), private={"groups_suppressed": str(i)} if i % 2 else None)
    led.add_cosignatures(6, [witness.add_checkpoint(led.checkpoint(), 0, [])])
    _, q1 = policies(tmp_path, led, witness)
    led.close()
    witness.close()
    ws = witness_state(tmp_path, capsys)
    good = export_store(db, tmp_path / "good")
    code, out, _ = run(["verify", str(good), "-p", q1, *ws], capsys)
    assert code == 0 and "3 private part(s) checked" in out
    parts = read_private((good / "private.bin").read_bytes())

    def variant(name: str, new: dict[int, bytes]) -> str:
        d = tmp_path / name
        shutil.copytree(good, d)
        blob = b"".join(
            i.to_bytes(8, "big") + len(o).to_bytes(4, "big") + o for i, o in sorted(new.items())
        )
        (d / "private.bin").write_bytes(blob)
        return str(d)

    salt3 = parts[3][:16]
    cases = {
        # the operator lowers a suppressed-groups count, keeping the salt
        "changed": ({**parts, 3: encode_opening(salt3, {"groups_suppressed": "0"})}, 3),
        # ... or withholds one private part from the auditor
        "withheld": ({i: o for i, o in parts.items() if i != 5}, 5),
        # ... or slips one in for an entry that committed to none
        "added": ({**parts, 2: encode_opening(b"\x00" * 16, {"rows": "1"})}, 2),
        # ... or hands over bytes that are no opening at all
        "garbage": ({**parts, 1: b"\x01" * 10}, 1),
    }
    for name, (new, index) in cases.items():
        code, out, _ = run(["verify", variant(name, new), "-p", q1, *ws], capsys)
        assert code == 1 and f"FAIL private-mismatch at entry {index}" in out, (name, out)
    d = tmp_path / "truncated"
    shutil.copytree(good, d)
    (d / "private.bin").write_bytes((good / "private.bin").read_bytes()[:-3])
    code, out, _ = run(["verify", str(d), "-p", q1, *ws], capsys)
    assert code == 1 and "FAIL export-inconsistent" in out


def test_vkey_reads_a_node_certificate(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from datafed import pki

    d = tmp_path / "pki"
    pki.init_ca(d)
    node = pki.issue(d, "node", "water-north")
    analyst = pki.issue(d, "analyst", "alice")
    key = pki.load_signing_key(node.signing_key)
    led_vkey = Ledger.open(tmp_path / "l.db", ORIGIN, key)
    want = led_vkey.verifier.vkey()
    led_vkey.close()
    code, out, _ = run(["vkey", str(node.cert), "--ca", str(d / "ca.crt")], capsys)
    assert code == 0 and out.strip() == want  # name and key from the certificate
    code, out, _ = run(["vkey", str(node.signing_key), "--name", ORIGIN], capsys)
    assert code == 0 and out.strip() == want  # the key form still works
    code, out, _ = run(["vkey", str(node.cert), "--witness"], capsys)
    assert code == 0 and out.startswith("datafed/witness/water-north+")
    other = tmp_path / "other"
    pki.init_ca(other)
    for argv, message in [
        (["vkey", str(node.cert), "--ca", str(other / "ca.crt")], "is not issued by the CA"),
        (["vkey", str(analyst.cert)], "is a certificate of role analyst: only nodes and witnesses"),
        (["vkey", str(node.signing_key), "--ca", str(d / "ca.crt")], "--ca does not apply"),
    ]:
        code, out, err = run(argv, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_log_with_schema_1_leaves_still_verifies(tmp_path: Path) -> None:
    """Entries written before private parts (schema 1) verify beside new ones."""
    from audit import merkle
    from audit.checkpoint import Checkpoint, log_verifier, sign_checkpoint
    from audit.export import ExportDir, write_export
    from audit.policy import Policy
    from audit.private import commitment, new_opening
    from audit.records import LEAF_PREFIXES, encode_body, encode_leaf
    from audit.verify import verify_log

    old = [
        LEAF_PREFIXES[1] + i.to_bytes(8, "big") + encode_body(make_record(i))[1:] for i in range(5)
    ]
    opening = new_opening({"rows": "9"})
    new = [encode_leaf(5, encode_body(make_record(5, private_commitment=commitment(opening))))]
    leaves = old + new
    root = merkle.root_from_leaf_hashes(merkle.hash_leaf(x) for x in leaves)[1]
    note = sign_checkpoint(Checkpoint(ORIGIN, 6, root), KEY).encode()
    hashes = [merkle.hash_leaf(x) for x in leaves]
    exp = write_export(tmp_path / "e", ORIGIN, leaves, [(6, note)], hashes, {5: opening})
    policy = Policy({ORIGIN: log_verifier(ORIGIN, KEY)})
    report = verify_log(ExportDir(exp), policy, deep=True)
    assert report.ok and report.entries == 6 and report.private == 1, report.findings
    bad = write_export(tmp_path / "b", ORIGIN, leaves, [(6, note)], hashes, {})
    codes = [(f.code, f.index) for f in verify_log(ExportDir(bad), policy).findings]
    assert codes == [("private-mismatch", 5)]
