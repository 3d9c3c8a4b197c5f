"""``datafed-audit`` as a user runs it: exit codes, one-line errors, named failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger
from audit.export import export_store
from audit.witness import WitnessStore

from .conftest import make_record, run_cli

ORIGIN = "datafed/ledger/water-north"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x21" * 32)
WKEY = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)


run = run_cli


@pytest.fixture
def site(tmp_path: Path) -> Path:
    led = Ledger.open(tmp_path / "l.db", ORIGIN, KEY)
    w = WitnessStore(tmp_path / "w.db", "datafed/witness/regulator", WKEY, [led.verifier])
    recs = [
        make_record(i, node="water-north", job_id="job-1" if i < 3 else f"j{i}") for i in range(30)
    ]
    led.append_many(recs[:20])
    note = led.checkpoint()
    led.add_cosignatures(20, [w.add_checkpoint(note, 0, [])])
    (tmp_path / "cp20.note").write_text(led.checkpoint())
    led.append_many(recs[20:])
    note = led.checkpoint()
    led.add_cosignatures(30, [w.add_checkpoint(note, 20, led.consistency_proof(20))])
    (tmp_path / "cp30.note").write_text(led.checkpoint())
    (tmp_path / "policy.toml").write_text(
        f'quorum = 1\nlogs = ["{led.verifier.vkey()}"]\n'
        f'witnesses = ["{w.verifier.vkey()}"]\nstate = "state.json"\n'
    )
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "log.pem").write_bytes(pem)
    led.close()
    w.close()
    return tmp_path


def test_export_verify_prove_consistency(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = str(site / "policy.toml")
    wstate = str(site / "w.json")
    code, out, _ = run(["witness-export", wstate, "--db", str(site / "w.db")], capsys)
    assert code == 0 and "exported the state of witness datafed/witness/regulator: 1 log(s)" in out
    assert f"  {ORIGIN}: size 30, cosigned " in out
    code, out, _ = run(["export", str(site / "exp"), "--db", str(site / "l.db")], capsys)
    assert code == 0 and "exported 30 entries, 0 private part(s) and 2 checkpoint(s)" in out
    code, out, _ = run(["verify", str(site / "exp"), "-p", pol, "--witness-state", wstate], capsys)
    assert code == 0 and out.startswith(f"OK {ORIGIN}: 30 entries, 2 checkpoint(s)")
    assert "witnesses consulted: 1 of 1 hold a cosigned checkpoint of this log" in out
    assert "  datafed/witness/regulator: size 30, cosigned " in out
    assert (site / "state.json").exists()
    # without the witness's state the log's newest witnessed size is unknown: refused
    code, out, _ = run(["verify", str(site / "exp"), "-p", pol], capsys)
    assert code == 1 and "FAIL witness-unavailable: 0 of 1 witnesses hold a verified" in out
    assert "datafed/witness/regulator (not consulted: no --witness-state file" in out
    code, out, _ = run(["prove", str(site / "exp"), "--index", "4", "-p", pol], capsys)
    assert code == 0 and "OK entry 4 is included" in out and '"job_id": "j4"' in out
    args = ["consistency", str(site / "cp20.note"), str(site / "cp30.note")]
    code, out, _ = run([*args, "--export", str(site / "exp"), "-p", pol], capsys)
    assert code == 0 and "size 30 is consistent with size 20" in out


def test_verify_names_tampering(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_store(site / "l.db", site / "exp")
    data = bytearray((site / "exp" / "entries.bin").read_bytes())
    data[-10] ^= 0x20
    (site / "exp" / "entries.bin").write_bytes(bytes(data))
    code, out, _ = run(["verify", str(site / "exp"), "-p", str(site / "policy.toml")], capsys)
    assert code == 1
    assert "FAIL entry-modified at entry 29" in out
    assert "FAIL root-mismatch at checkpoint size 30" in out
    assert not (site / "state.json").exists()  # a failed audit records nothing


def test_report_and_reconcile(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_store(site / "l.db", site / "exp")
    pol = ["-p", str(site / "policy.toml")]
    code, out, _ = run(["report", str(site / "exp"), "--by", "dataset", *pol], capsys)
    assert code == 0 and "pipe_incidents" in out and "30" in out
    code, out, _ = run(["reconcile", "j5", str(site / "exp"), *pol], capsys)
    assert code == 0 and "OK job j5 reconciles" in out
    code, out, _ = run(["reconcile", "job-1", str(site / "exp"), *pol], capsys)
    assert code == 1 and "FAIL mismatch requester" in out


def test_vkey(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["vkey", str(site / "log.pem"), "--name", ORIGIN], capsys)
    assert code == 0 and out.strip() in (site / "policy.toml").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "{s}/nope", "-p", "{s}/policy.toml"], "not an export directory"),
        (["verify", "{s}/exp", "-p", "{s}/missing.toml"], "policy file not found"),
        (["verify", "{s}/exp", "-p", "{s}/bad.toml"], "policy: quorum must be between 0 and the"),
        (["verify", "-p", "{s}/policy.toml"], "give exactly one of an export directory or --node"),
        (["verify", "--node", "127.0.0.1:1", "-p", "{s}/policy.toml"], "--node needs --ca"),
        (["prove", "{s}/exp", "--index", "99", "-p", "{s}/policy.toml"], "entry index must be in"),
        (["export", "{s}/exp", "--db", "{s}/l.db"], "exists and is not empty"),
        (["export", "{s}/new"], "give exactly one of --db or --node"),
        (["export", "{s}/new", "--db", "{s}/none.db"], "ledger database not found"),
        (["report", "{s}/exp", "--by", "secret", "-p", "{s}/policy.toml"], "cannot group by"),
        (["vkey", "{s}/policy.toml", "--name", "x"], "is not a PEM certificate or Ed25519 key"),
        (["vkey", "{s}/log.pem"], "is a key file: give the key name with --name"),
        (["verify", "{s}/exp", "-p", "{s}/q0.toml"], "witness quorum 0: an operator could"),
        (["report", "{s}/exp", "-p", "{s}/q0.toml"], "pass --no-witnesses to accept that"),
        (["jobs", "{s}/exp", "-p", "{s}/q0.toml"], "pass --no-witnesses to accept that"),
        (["reconcile", "j1", "{s}/exp", "-p", "{s}/q0.toml"], "pass --no-witnesses"),
        (["lineage", "ab", "{s}/exp", "-p", "{s}/q0.toml"], "pass --no-witnesses"),
        (["verify", "{s}/exp[1]", "-p", "{s}/policy.toml"], "no entries.bin): {s}/exp[1]"),
        (["verify", "{s}/exp", "-p", "{s}/budget.toml"], "policy: budgets.x must be a number"),
        (["jobs", "{s}/exp", "-p", "{s}/agency.toml"], "policy: agencies must be a table"),
        (
            [
                "consistency",
                "{s}/cp30.note",
                "{s}/cp20.note",
                "--export",
                "{s}/exp",
                "-p",
                "{s}/policy.toml",
            ],
            "need 0 < old size <= new size",
        ),
        (
            [
                "consistency",
                "{s}/policy.toml",
                "{s}/cp20.note",
                "--export",
                "{s}/exp",
                "-p",
                "{s}/policy.toml",
            ],
            "not a signed checkpoint",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    site: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    export_store(site / "l.db", site / "exp")
    logs_line = (site / "policy.toml").read_text().splitlines()[1]
    (site / "bad.toml").write_text(f"quorum = 5\n{logs_line}\n")
    (site / "q0.toml").write_text(f"{logs_line}\n")
    (site / "budget.toml").write_text(f'{logs_line}\n[budgets]\nx = "lots"\n')
    (site / "agency.toml").write_text(f'agencies = "water"\n{logs_line}\n')
    before = sorted(p.name for p in site.iterdir())
    code, out, err = run([a.format(s=site) for a in argv], capsys)
    assert code == 2, (out, err)
    assert message.format(s=site) in err, err  # literal: no markup eats "[1]"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in site.iterdir()) == before
