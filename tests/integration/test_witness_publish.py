"""Three real nodes witnessing each other: published checkpoints, quorum audit, rollback refused."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.checkpoint import log_verifier, open_checkpoint, witness_verifier
from audit.note import raw_public_key
from audit.remote import LedgerClient, mtls_channel
from datafed import pki
from datafed.client import Federation
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from nodes.context import ledger_origin
from nodes.ledger.publish import witness_name

BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2024"


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "datafed-audit"), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def wfed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("witness-fed")
    specs = water_district_specs(segments=60)
    with LocalFederation.create(root, specs, witnesses=True, publish_interval_s=0.5) as fed:
        fed.start()
        yield fed


def _key(fed: LocalFederation, name: str) -> bytes:
    return raw_public_key(
        pki.load_signing_key(pki.party_paths(fed.pki_dir, "node", name).signing_key)
    )


def cosigners(fed: LocalFederation, name: str) -> tuple[int, set[str]]:
    """The size of ``name``'s latest checkpoint (as the auditor sees it) and its cosigners."""
    node = next(n for n in fed.nodes if n.spec.name == name)
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")

    async def fetch() -> str:
        ca = fed.pki_dir / "ca.crt"
        async with mtls_channel(node.address, ca, files.cert, files.key, name) as channel:
            return await LedgerClient(channel, 10).checkpoint()

    opened = open_checkpoint(
        asyncio.run(fetch()), log_verifier(ledger_origin(name), _key(fed, name))
    )
    witnesses = [
        witness_verifier(witness_name(n.spec.name), _key(fed, n.spec.name)) for n in fed.nodes
    ]
    return opened.checkpoint.size, opened.cosigners(witnesses)


def wait_for(check, timeout_s: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def vkey(fed: LocalFederation, node: str, name: str, *flags: str) -> str:
    key = pki.party_paths(fed.pki_dir, "node", node).signing_key
    done = audit_cli("vkey", str(key), "--name", name, *flags)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def export_and_verify(fed: LocalFederation, name: str, witnesses: list[str], out: Path):  # type: ignore[no-untyped-def]
    node = next(n for n in fed.nodes if n.spec.name == name)
    files = pki.party_paths(fed.pki_dir, "auditor", "regulator")
    tls = ["--ca", str(fed.pki_dir / "ca.crt"), "--cert", str(files.cert), "--key", str(files.key)]
    target = out / f"export-{name}-{time.monotonic_ns()}"
    states = []  # the witnesses' state first, then the log (docs/audit.md)
    for w in witnesses:
        address = next(n.address for n in fed.nodes if n.spec.name == w)
        state = target.with_name(f"{target.name}-{w}.json")
        done = audit_cli("witness-export", str(state), "--node", address, "--server-name", w, *tls)
        assert done.returncode == 0, done.stdout + done.stderr
        states += ["--witness-state", str(state)]
    done = audit_cli("export", str(target), "--node", node.address, "--server-name", name, *tls)
    assert done.returncode == 0, done.stdout + done.stderr
    wkeys = [vkey(fed, w, witness_name(w), "--witness") for w in witnesses]
    policy = target.with_suffix(".toml")
    policy.write_text(
        "quorum = 2\n"
        f'logs = ["{vkey(fed, name, ledger_origin(name))}"]\n'
        "witnesses = [" + ", ".join(f'"{k}"' for k in wkeys) + "]\n"
    )
    return audit_cli("verify", str(target), "-p", str(policy), *states)


def test_every_checkpoint_is_cosigned_by_the_other_two(wfed: LocalFederation, tmp_path: Path):
    fed = Federation.from_file(wfed.fed_toml)
    for _ in range(2):
        fed.query(SQL, purpose=PURPOSE, protection="plain")
    names = [n.spec.name for n in wfed.nodes]
    for name in names:
        others = {witness_name(n) for n in names if n != name}

        def published(name: str = name, others: set[str] = others) -> bool:
            size, cosigned = cosigners(wfed, name)
            return size >= 4 and cosigned == others

        assert wait_for(published), (name, cosigners(wfed, name))
        peers = [n for n in names if n != name]
        done = export_and_verify(wfed, name, peers, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        # the same export under a quorum that counts a witness that did not cosign fails
        wrong = [name, peers[0]]
        done = export_and_verify(wfed, name, wrong, tmp_path)
        assert done.returncode != 0 and "quorum-not-met" in done.stdout, done.stdout


def test_witnesses_refuse_a_rolled_back_log(wfed: LocalFederation, tmp_path: Path):
    victim = wfed.nodes[0]
    name = victim.spec.name
    witness_db = wfed.nodes[1].config.parent / "state" / "witness.sqlite"

    def held() -> int:
        with sqlite3.connect(witness_db) as db:
            row = db.execute(
                "SELECT MAX(size) FROM cosigned WHERE origin = ?", (ledger_origin(name),)
            ).fetchone()
        return int(row[0] or 0)

    wfed.stop_node(victim)
    before = held()
    assert before >= 4
    state = victim.config.parent / "state"
    for f in state.glob("ledger.sqlite*"):  # the operator replaces the ledger with a fresh one
        f.rename(tmp_path / f.name)
    wfed.start_node(victim)
    Federation.from_file(wfed.fed_toml).query(SQL, purpose=PURPOSE, protection="plain")

    def refused() -> bool:
        return "WITNESS REFUSED" in victim.log.read_text(errors="replace")

    assert wait_for(refused), victim.log.read_text(errors="replace")[-3000:]
    assert held() == before  # the witness did not move to the forked history
    size, cosigned = cosigners(wfed, name)
    assert size == 2 and cosigned == set()
    peers = [n.spec.name for n in wfed.nodes if n is not victim]
    done = export_and_verify(wfed, name, peers, tmp_path)
    assert done.returncode != 0 and "quorum-not-met" in done.stdout, done.stdout
    # the other nodes keep publishing normally
    other = wfed.nodes[1].spec.name
    assert wait_for(
        lambda: (
            cosigners(wfed, other)[1] == {witness_name(p) for p in (name, wfed.nodes[2].spec.name)}
        )
    )
