"""Ledgers witnessed across the border: each city's nodes cosign the other city's logs.

Two cities with two CAs (:class:`datafed.local.cities.TwoCities` with ``witnesses``): every
node witnesses the other city's logs and publishes its own checkpoints to the other city's
nodes. Each city's auditor then verifies the other city's log with its log key pinned
from the partner's trust bundle and its own city's nodes as the witnesses (quorum: all).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.export import export_store
from audit.note import SIG_COSIGNATURE_V1, SIG_ED25519, vkey
from audit.vkeys import public_key_of
from datafed import pki
from datafed.client import Federation
from datafed.local.cities import CITIES, SHARED_PURPOSE, TwoCities

BIN = Path(sys.executable).parent
SQL = "SELECT SUM(bursts) FROM pipe_incidents"


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoCities]:
    c = TwoCities.create(tmp_path_factory.mktemp("witness"), segments=10, witnesses=True)
    try:
        c.recognise()
        c.start()
        yield c
    finally:
        c.stop()


def audit(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "datafed-audit"), *args], capture_output=True, text=True, timeout=60
    )
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def key(cities: TwoCities, city: str, node: str, ca: Path, *, witness: bool) -> str:
    cert = pki.party_paths(cities.cities[city].pki_dir, "node", node).cert
    found = public_key_of(cert.read_bytes(), cert.name, witness=witness, ca=ca)
    assert found.name is not None
    return vkey(found.name, SIG_COSIGNATURE_V1 if witness else SIG_ED25519, found.key)


@pytest.mark.parametrize(("auditor", "log_city", "log_node"), [
    ("shanghai", "suzhou", "water-wujiang"),
    ("suzhou", "shanghai", "water-north"),
])  # fmt: skip
def test_each_citys_auditor_verifies_the_other_citys_log_cosigned_by_its_own_nodes(
    cities, tmp_path, auditor, log_city, log_node
):
    Federation.from_file(cities.fed_toml("suzhou")).query(SQL, purpose=SHARED_PURPOSE)
    home_ca = cities.cities[auditor].pki_dir / "ca.crt"
    witnesses = [key(cities, auditor, n, home_ca, witness=True) for n in CITIES[auditor]]
    log = key(cities, log_city, log_node, cities.bundle(log_city), witness=False)
    assert log.startswith(f"datafed/ledger/{log_city}:{log_node}+")
    policy = tmp_path / "policy.toml"
    quorum = len(witnesses)
    policy.write_text(
        f"quorum = {quorum}\nlogs = {json.dumps([log])}\nwitnesses = {json.dumps(witnesses)}\n"
    )
    db = cities.cities[log_city].root / "nodes" / log_node / "state" / "ledger.sqlite"
    deadline, done = time.monotonic() + 60, None
    while time.monotonic() < deadline:  # until a publishing round reached every witness
        round_dir = tmp_path / f"round-{time.monotonic_ns()}"
        round_dir.mkdir()
        states = []  # the auditor's own city's witnesses: what each cosigned, taken first
        for n in CITIES[auditor]:
            state = round_dir / f"{n}.json"
            wdb = cities.cities[auditor].root / "nodes" / n / "state" / "witness.sqlite"
            audit("witness-export", str(state), "--db", str(wdb), check=True)
            states += ["--witness-state", str(state)]
        export_store(db, round_dir / "log")
        done = audit("verify", str(round_dir / "log"), "-p", str(policy), *states)
        if done.returncode == 0:
            break
        time.sleep(1)
    assert done is not None and done.returncode == 0, done.stdout + done.stderr
    assert f"datafed/ledger/{log_city}:{log_node}" in done.stdout
