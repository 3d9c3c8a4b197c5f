"""The log against its witnesses' newest cosigned checkpoints (issue 17, class 7c).

A log shorter than, or inconsistent with, a checkpoint a witness cosigned fails; a witness
state that does not verify against the pinned keys is refused; a witness that does not
answer is reported and counts against the quorum.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import Ledger
from audit.checkpoint import open_checkpoint
from audit.export import ExportDir, export_store
from audit.policy import Policy
from audit.verify import VerifyReport, verify_log
from audit.witness import WitnessStore
from audit.witness_state import WitnessView, read_state_file, write_state_file

from .conftest import make_record, run_cli

ORIGIN = "datafed/ledger/water-north"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x61" * 32)
W1_KEY = Ed25519PrivateKey.from_private_bytes(b"\x62" * 32)
W2_KEY = Ed25519PrivateKey.from_private_bytes(b"\x63" * 32)
IMPOSTOR = Ed25519PrivateKey.from_private_bytes(b"\x64" * 32)


class Site:
    """A log cosigned by two witnesses at sizes 10, 25 and 40."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "ledger.db"
        self.ledger = Ledger.open(self.db, ORIGIN, LOG_KEY)
        v = [self.ledger.verifier]
        self.w1 = WitnessStore(tmp / "w1.db", "datafed/witness/w1", W1_KEY, v, clock=lambda: 7)
        self.w2 = WitnessStore(tmp / "w2.db", "datafed/witness/w2", W2_KEY, v, clock=lambda: 7)
        for old, size in ((0, 10), (10, 25), (25, 40)):
            self.ledger.append_many([make_record(i) for i in range(old, size)])
            note = self.ledger.checkpoint()
            proof = self.ledger.consistency_proof(old, size) if old else []
            sigs = [w.add_checkpoint(note, old, proof) for w in (self.w1, self.w2)]
            self.ledger.add_cosignatures(size, sigs)

    def policy(self, quorum: int = 2) -> Policy:
        return Policy({ORIGIN: self.ledger.verifier}, (self.w1.verifier, self.w2.verifier), quorum)

    def views(self) -> list[WitnessView]:
        return [
            WitnessView(w.name, f"file {w.name[-2:]}.json", {o: n.encode() for o, n in nn.items()})
            for w in (self.w1, self.w2)
            for nn in [w.newest()]
        ]

    def state_file(self, w: WitnessStore) -> Path:
        path = self.tmp / f"{w.name[-2:]}.json"
        write_state_file(path, w.name, w.newest())
        return path

    def policy_file(self, quorum: int = 2) -> Path:
        path = self.tmp / f"policy{quorum}.toml"
        path.write_text(
            f'quorum = {quorum}\nlogs = ["{self.ledger.verifier.vkey()}"]\n'
            f'witnesses = ["{self.w1.verifier.vkey()}", "{self.w2.verifier.vkey()}"]\n'
            'state = "state.json"\n'
        )
        return path

    def export(self, name: str = "exp") -> Path:
        return export_store(self.db, self.tmp / name)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    yield s
    s.ledger.close()
    s.w1.close()
    s.w2.close()


def codes(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(f.code, f.size) for f in report.findings]


def cut(export: Path, size: int) -> None:
    """Keep the first ``size`` entries of an export and the checkpoints they cover."""
    data = (export / "entries.bin").read_bytes()
    pos = 0
    for _ in range(size):
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
    (export / "entries.bin").write_bytes(data[:pos])
    (export / "hashes.bin").write_bytes((export / "hashes.bin").read_bytes()[: size * 32])
    for note in (export / "checkpoints").iterdir():
        if int(note.stem) > size:
            note.unlink()


def test_a_log_that_extends_what_the_witnesses_hold_verifies(site: Site) -> None:
    report = verify_log(ExportDir(site.export()), site.policy(), witnesses=site.views())
    assert report.ok, report.findings
    held = report.witness_held or []
    assert {(h.witness, h.checkpoint.size, h.timestamp) for h in held} == {
        ("datafed/witness/w1", 40, 7),
        ("datafed/witness/w2", 40, 7),
    }
    assert report.witness_lines() == [
        "witnesses consulted: 2 of 2 hold a cosigned checkpoint of this log (quorum 2)",
        "  datafed/witness/w1: size 40, cosigned 1970-01-01 00:00:07 UTC (file w1.json)",
        "  datafed/witness/w2: size 40, cosigned 1970-01-01 00:00:07 UTC (file w2.json)",
    ]
    # entries the witnesses have not seen yet do not contradict them
    site.ledger.append_many([make_record(i) for i in range(40, 47)])
    site.ledger.checkpoint()
    report = verify_log(ExportDir(site.export("later")), site.policy(), witnesses=site.views())
    assert report.ok and report.entries == 47, report.findings


def test_a_log_cut_back_is_behind_the_witnesses(site: Site) -> None:
    exp = site.export()
    cut(exp, 25)  # back to a checkpoint that both witnesses cosigned, too
    assert verify_log(ExportDir(exp), site.policy()).ok  # the log alone cannot show it
    report = verify_log(ExportDir(exp), site.policy(), witnesses=site.views())
    assert codes(report) == [("log-behind-witness", 40)] * 2
    root40 = open_checkpoint(site.ledger.checkpoint(), site.ledger.verifier).checkpoint.root_hash
    msg = report.findings[0].message
    assert msg.startswith("witness datafed/witness/w1 holds size 40 root ")
    assert __import__("base64").b64encode(root40).decode() in msg
    assert "; the log has 25 entries, root " in msg


def test_a_rewritten_log_is_inconsistent_with_the_witnesses(site: Site) -> None:
    fake_db = site.tmp / "fake.db"
    fake = Ledger.open(fake_db, ORIGIN, LOG_KEY)  # the operator re-signs another history
    fake.append_many([make_record(i) for i in range(25)])
    fake.append_many([make_record(i, decision="approved", reason="x") for i in range(25, 44)])
    fake.checkpoint()
    fake.close()
    report = verify_log(
        ExportDir(export_store(fake_db, site.tmp / "fake")), site.policy(), witnesses=site.views()
    )
    assert codes(report) == [("quorum-not-met", None)] + [("witness-inconsistent", 40)] * 2
    assert "the log's entries hash to " in report.findings[1].message
    assert "(the log has 44 entries, root " in report.findings[1].message


def forge(path: Path, name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    edit(data)
    out = path.with_name(name)
    out.write_text(json.dumps(data))
    return out


def test_forged_witness_files_are_refused(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    exp, pol = str(site.export()), str(site.policy_file(quorum=2))
    good1, good2 = site.state_file(site.w1), site.state_file(site.w2)
    code, out, _ = run_cli(["verify", exp, "-p", pol, "--witness-state", str(good1)], capsys)
    assert code == 1 and "FAIL witness-unavailable: 1 of 2 witnesses hold a verified" in out
    code, out, _ = run_cli(
        ["verify", exp, "-p", pol, "--witness-state", str(good1), "--witness-state", str(good2)],
        capsys,
    )
    assert code == 0 and "witnesses consulted: 2 of 2" in out, out
    (site.tmp / "state.json").unlink()
    note = good2.read_text()
    w2 = json.loads(note)["checkpoints"][ORIGIN]
    sig_line = w2.rstrip("\n").rsplit("\n", 1)[1]
    impostor = WitnessStore(
        site.tmp / "imp.db", "datafed/witness/w2", IMPOSTOR, [site.ledger.verifier]
    )
    impostor.add_checkpoint(site.ledger.checkpoint(), 0, [])
    bigger = site.ledger.checkpoint().split("\n")
    cases = {
        # the cosignature's bytes altered
        "its cosignature does not verify against the pinned key": lambda d: d["checkpoints"].update(
            {
                ORIGIN: w2.replace(
                    sig_line, sig_line[:-6] + ("AAAAA=" if sig_line[-6] != "A" else "BBBBB=")
                )
            }
        ),
        # cosigned under the witness's name by a key the auditor never pinned
        "its checkpoint carries no cosignature by the pinned key": lambda d: d.update(
            checkpoints=impostor.newest()
        ),
        # a bigger size claimed for the witness, to frame an honest log
        "its checkpoint of the log does not verify": lambda d: d["checkpoints"].update(
            {ORIGIN: w2.replace(f"\n{bigger[1]}\n", "\n99\n", 1)}
        ),
        # a witness the policy does not pin
        "'datafed/witness/w3' is not a witness pinned in the policy": lambda d: d.update(
            witness="datafed/witness/w3"
        ),
    }
    for i, (message, edit) in enumerate(cases.items()):
        bad = forge(good2, f"bad{i}.json", edit)
        args = [
            "verify",
            exp,
            "-p",
            pol,
            "--witness-state",
            str(good1),
            "--witness-state",
            str(bad),
        ]
        code, out, _ = run_cli(args, capsys)
        assert code == 1, (message, out)
        assert "FAIL witness-state-invalid: witness " in out and message in out, (message, out)
        assert "FAIL witness-unavailable: 1 of 2" in out, out
        assert "log-behind-witness" not in out  # a forged file never fails an honest log
        assert not (site.tmp / "state.json").exists()  # a failed audit records nothing
    impostor.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "is not valid JSON"),
        (b'{"format": "other"}', "is not of format datafed-witness-state/1"),
        (b'{"format": "datafed-witness-state/1", "witness": 3}', "lacks its witness"),
        (
            b'{"format": "datafed-witness-state/1", "witness": "w", "checkpoints": {"a": 1}}',
            "checkpoints must map origins to notes",
        ),
    ],
)
def test_a_malformed_witness_file_is_bad_input(
    site: Site, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    exp, pol = str(site.export()), str(site.policy_file())
    bad = site.tmp / "bad.json"
    bad.write_bytes(content)
    code, out, err = run_cli(["verify", exp, "-p", pol, "--witness-state", str(bad)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and not (site.tmp / "state.json").exists()
    code, _, err = run_cli(["verify", exp, "-p", pol, "--witness-state", "missing.json"], capsys)
    assert code == 2 and "witness state file not found: missing.json" in err


def test_a_missing_witness_counts_against_the_quorum(site: Site) -> None:
    exp = ExportDir(site.export())
    one = site.views()[:1]
    report = verify_log(exp, site.policy(quorum=1), witnesses=one)
    assert report.ok, report.findings
    assert report.warnings == [
        "witness datafed/witness/w2 (not consulted: no --witness-state file, nor --node with "
        "its address) did not vouch"
    ]
    report = verify_log(exp, site.policy(quorum=2), witnesses=one)
    assert codes(report) == [("witness-unavailable", None)]
    # a witness that holds nothing of this log does not vouch for it either
    empty = WitnessView("datafed/witness/w2", "file w2.json", {})
    report = verify_log(exp, site.policy(quorum=2), witnesses=[*one, empty])
    assert codes(report) == [("witness-unavailable", None)]
    assert (
        "datafed/witness/w2 (file w2.json: holds no checkpoint of it)" in report.findings[0].message
    )


async def test_an_unreachable_witness_is_reported(site: Site, tmp_path: Path) -> None:
    from audit.remote import ask_witnesses
    from datafed import pki

    pki.init_ca(tmp_path / "pki")
    files = pki.issue(tmp_path / "pki", "auditor", "audrey")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = Policy(
        {ORIGIN: site.ledger.verifier},
        (site.w1.verifier, site.w2.verifier),
        2,
        witness_addresses={"datafed/witness/w2": f"127.0.0.1:{port}"},
    )
    tls = (tmp_path / "pki" / "ca.crt", files.cert, files.key)
    views = await ask_witnesses(policy, ORIGIN, tls, timeout=10)
    assert [(v.witness, v.source) for v in views] == [("datafed/witness/w2", f"127.0.0.1:{port}")]
    assert views[0].problem is not None and views[0].problem.startswith("unreachable or refused")
    report = verify_log(ExportDir(site.export()), policy, witnesses=[site.views()[0], *views])
    assert codes(report) == [("witness-unavailable", None)]
    message = report.findings[0].message
    assert f"datafed/witness/w2 (127.0.0.1:{port}: unreachable or refused: " in message
    lines = report.witness_lines()
    assert (
        lines[0] == "witnesses consulted: 1 of 2 hold a cosigned checkpoint of this log (quorum 2)"
    )
    assert lines[2].startswith(f"  datafed/witness/w2 (127.0.0.1:{port}: unreachable")


def test_witness_export_writes_what_the_witness_cosigned(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = site.w1.newest()
    out = site.tmp / "w1-state.json"
    code, text, _ = run_cli(["witness-export", str(out), "--db", str(site.tmp / "w1.db")], capsys)
    assert code == 0 and read_state_file(out).notes == {ORIGIN: newest[ORIGIN].encode()}
    assert f"  {ORIGIN}: size 40, cosigned 1970-01-01 00:00:07 UTC" in text
    code, _, err = run_cli(["witness-export", str(out), "--db", str(site.tmp / "w1.db")], capsys)
    assert code == 2 and "exists: give a new file" in err
    empty = WitnessStore(site.tmp / "e.db", "datafed/witness/e", W1_KEY, [site.ledger.verifier])
    empty.close()
    code, _, err = run_cli(
        ["witness-export", str(site.tmp / "e.json"), "--db", str(site.tmp / "e.db")], capsys
    )
    assert code == 2 and "the witness holds no cosigned checkpoint to export" in err
    code, _, err = run_cli(
        ["witness-export", str(site.tmp / "x.json"), "--db", str(site.tmp / "nope.db")], capsys
    )
    assert code == 2 and "witness state database not found" in err
    assert not (site.tmp / "e.json").exists() and not (site.tmp / "x.json").exists()


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ({"datafed/witness/w3": "127.0.0.1:1"}, "names 'datafed/witness/w3', not a pinned witness"),
        (
            {"datafed/witness/w1": "nowhere"},
            "witness_addresses.datafed/witness/w1 must be host:port",
        ),
    ],
)
def test_witness_addresses_are_checked(site: Site, addresses: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy({ORIGIN: site.ledger.verifier}, (site.w1.verifier,), 1, witness_addresses=addresses)
