"""Issue 17, class 7c: an operator who edits its own witnessed ledger fails ``verify``.

Three real nodes witness each other (mTLS on 127.0.0.1, publishing every 0.5 s).  An
operator stops its node, edits the node's SQLite ledger and starts it again: it truncates
the log back to a checkpoint the auditor saw, or re-signs a different history after one.
Its own export then holds only validly signed checkpoints, some of them cosigned, so the
log's own data cannot show it; the witnesses' newest cosigned checkpoints do.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from audit import Ledger
from datafed import pki
from datafed.client import Federation
from datafed.local.federation import PURPOSE, LocalFederation, LocalNode, water_district_specs
from nodes.context import ledger_origin
from nodes.ledger.publish import witness_name
from tests.integration.test_witness_publish import cosigners
from tests.unit.audit.conftest import make_record

BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"
LEVEL_SHIFT = 56  # audit.sqlite_store: interior node id = level << 56 | index


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "datafed-audit"), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def wfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("witness-verify")
    specs = water_district_specs(segments=60)
    with LocalFederation.create(root, specs, witnesses=True, publish_interval_s=0.5) as fed:
        fed.start()
        yield fed


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def query(fed: LocalFederation, times: int = 1) -> None:
    client = Federation.from_file(fed.fed_toml)
    for _ in range(times):
        client.query(SQL, purpose=PURPOSE, protection="plain")


def witnessed_size(fed: LocalFederation, victim: LocalNode) -> int:
    """Wait until both other nodes cosigned the victim's current checkpoint; its size."""
    name = victim.spec.name
    others = {witness_name(n.spec.name) for n in fed.nodes if n is not victim}
    seen: list[int] = []

    def done() -> bool:
        size, cosigned = cosigners(fed, name)
        seen[:] = [size]
        return cosigned == others

    assert wait_for(done), (name, cosigners(fed, name))
    return seen[0]


def vkey(fed: LocalFederation, node: str, name: str, *flags: str) -> str:
    key = pki.party_paths(fed.pki_dir, "node", node).signing_key
    done = audit_cli("vkey", str(key), "--name", name, *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def policy_for(fed: LocalFederation, victim: LocalNode, path: Path, state: bool = False) -> Path:
    """The auditor's policy for the victim's log: the other two nodes as witnesses, quorum 2."""
    peers = [n for n in fed.nodes if n is not victim]
    wkeys = [vkey(fed, p.spec.name, witness_name(p.spec.name), "--witness") for p in peers]
    name = victim.spec.name
    lines = [
        "quorum = 2",
        f'logs = ["{vkey(fed, name, ledger_origin(name))}"]',
        "witnesses = [" + ", ".join(f'"{k}"' for k in wkeys) + "]",
    ]
    if state:
        lines.append(f'state = "{path.stem}-state.json"')
    lines.append("[witness_addresses]")  # where `verify --node` asks them
    lines += [f'"{witness_name(p.spec.name)}" = "{p.address}"' for p in peers]
    path.write_text("\n".join(lines) + "\n")
    return path


def auditor_tls(fed: LocalFederation) -> list[str]:
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")
    ca = str(fed.pki_dir / "ca.crt")
    return ["--ca", ca, "--cert", str(files.cert), "--key", str(files.key)]


def verify_online(fed: LocalFederation, victim: LocalNode, policy: Path, *extra: str):  # type: ignore[no-untyped-def]
    node = ["--node", victim.address, "--server-name", victim.spec.name, *auditor_tls(fed)]
    return audit_cli("verify", "-p", str(policy), *node, *extra)


def ledger_db(node: LocalNode) -> Path:
    return node.config.parent / "state" / "ledger.sqlite"


def truncate_ledger(db: Path, size: int) -> None:
    """What the operator does to its stopped node's SQLite ledger: keep entries < ``size``."""
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM entries WHERE idx >= ?", (size,))
        c.execute("DELETE FROM private WHERE idx >= ?", (size,))
        c.execute("DELETE FROM checkpoints WHERE size > ?", (size,))
        mask = (1 << LEVEL_SHIFT) - 1
        ids = [i for (i,) in c.execute("SELECT id FROM nodes")]
        beyond = [(i,) for i in ids if ((i & mask) + 1) << (i >> LEVEL_SHIFT) > size]
        c.executemany("DELETE FROM nodes WHERE id = ?", beyond)


def signing_key(fed: LocalFederation, node: LocalNode):  # type: ignore[no-untyped-def]
    return pki.load_signing_key(pki.party_paths(fed.pki_dir, "node", node.spec.name).signing_key)


def test_truncation_to_an_old_checkpoint_fails_verify(wfed: LocalFederation, tmp_path: Path):
    victim = wfed.nodes[0]
    query(wfed)
    seen = witnessed_size(wfed, victim)
    policy = policy_for(wfed, victim, tmp_path / "policy.toml", state=True)
    done = verify_online(wfed, victim, policy)  # the auditor sees (and records) size `seen`
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK {ledger_origin(victim.spec.name)}: {seen} entries" in done.stdout, done.stdout
    assert "witnesses consulted: 2 of 2 hold a cosigned checkpoint of this log" in done.stdout
    for w in wfed.nodes[1:]:
        assert f"  {witness_name(w.spec.name)}: size {seen}, cosigned " in done.stdout
    query(wfed, 2)
    newest = witnessed_size(wfed, victim)
    assert newest > seen
    # the operator cuts its log back to the checkpoint the auditor saw, and restarts
    wfed.stop_node(victim)
    truncate_ledger(ledger_db(victim), seen)
    wfed.start_node(victim)
    done = verify_online(wfed, victim, policy)
    assert done.returncode == 1, done.stdout + done.stderr
    for w in wfed.nodes[1:]:
        held = f"witness {witness_name(w.spec.name)} holds size {newest} root "
        assert f"FAIL log-behind-witness at checkpoint size {newest}: {held}" in done.stdout
    assert f"the log has {seen} entries, root " in done.stdout, done.stdout


def offline_audit(fed: LocalFederation, victim: LocalNode, out: Path):  # type: ignore[no-untyped-def]
    """The offline workflow: each witness's state first (one online, one from its database),
    then the log from the node's database, then verify."""
    out.mkdir()
    a, b = (n for n in fed.nodes if n is not victim)
    tls = ["--server-name", a.spec.name, *auditor_tls(fed)]
    done = audit_cli("witness-export", str(out / "a.json"), "--node", a.address, *tls)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"exported the state of witness {witness_name(a.spec.name)}: 2 log(s)" in done.stdout
    b_db = b.config.parent / "state" / "witness.sqlite"
    done = audit_cli("witness-export", str(out / "b.json"), "--db", str(b_db))
    assert done.returncode == 0, done.stdout + done.stderr
    done = audit_cli("export", str(out / "export"), "--db", str(ledger_db(victim)))
    assert done.returncode == 0, done.stdout + done.stderr
    states = ["--witness-state", str(out / "a.json"), "--witness-state", str(out / "b.json")]
    policy = policy_for(fed, victim, out / "policy.toml")
    return audit_cli("verify", str(out / "export"), "-p", str(policy), *states)


def test_rewrite_fails_verify_against_the_witnesses_newest_checkpoint(
    wfed: LocalFederation, tmp_path: Path
):
    victim = wfed.nodes[1]
    query(wfed)
    kept = witnessed_size(wfed, victim)
    query(wfed, 2)
    newest = witnessed_size(wfed, victim)
    assert newest > kept
    done = offline_audit(wfed, victim, tmp_path / "before")  # the honest log verifies
    assert done.returncode == 0, done.stdout + done.stderr
    assert "witnesses consulted: 2 of 2 hold a cosigned checkpoint of this log" in done.stdout
    # the operator keeps the history up to `kept`, writes another one after it (at least as
    # long as what the witnesses hold) and signs it with the node's own key
    wfed.stop_node(victim)
    db = ledger_db(victim)
    truncate_ledger(db, kept)
    origin = ledger_origin(victim.spec.name)
    led = Ledger.open(db, origin, signing_key(wfed, victim))
    led.append_many([make_record(i, node=victim.spec.name) for i in range(newest - kept + 1)])
    led.checkpoint()
    led.close()
    wfed.start_node(victim)
    done = offline_audit(wfed, victim, tmp_path / "after")
    assert done.returncode == 1, done.stdout + done.stderr
    for w in wfed.nodes:
        if w is not victim:
            held = f"witness {witness_name(w.spec.name)} holds size {newest} root "
            assert f"FAIL witness-inconsistent at checkpoint size {newest}: {held}" in done.stdout
    assert f"the log has {newest + 1} entries, root " in done.stdout, done.stdout
