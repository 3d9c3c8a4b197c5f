"""Day-2 operations on real nodes: backup and restore with verification, certificate renewal.

Three real DP nodes.  A backup taken while the node serves holds its ledger, budgets and
replay cache, and verifies; a restore refuses a serving node, a tampered archive and an
archive shorter than the ledger in place, and after a lost state folder brings the node
back with its history and budgets, verified.  A renewal keeps the ledger's signing key:
the node restarts under a new certificate and its ledger continues append-only; a
certificate binding another key is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from datafed import pki
from datafed.client import Federation
from datafed.local.federation import PURPOSE, LocalFederation, water_district_specs
from datafed.pki.identity import identity_from_pem
from tests.integration.raw import ledger_records

BIN = Path(sys.executable).parent
DP = """
[datasets.policy.dp]
epsilon_per_query = 0.5
budget_epsilon = 5.0
bounds = { bursts = [0, 3] }
"""
SQL = "SELECT SUM(bursts) FROM pipe_incidents"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    specs = water_district_specs(segments=10)
    for s in specs:
        s.policy_toml = s.policy_toml.replace(
            "[datasets.policy.group_domains]", DP.strip() + "\n[datasets.policy.group_domains]"
        )
    lf = LocalFederation.create(tmp_path_factory.mktemp("day2"), specs)
    lf.start()
    try:
        yield lf
    finally:
        lf.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = "datafed" if args[0] == "pki" else "datafed-node"
    return subprocess.run(
        [str(BIN / exe), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_backup_while_serving_and_restore_verified(fed: LocalFederation, tmp_path: Path) -> None:
    node = fed.nodes[0]
    name, config = node.spec.name, str(node.config)
    alice = Federation.from_file(fed.fed_toml)
    alice.query(SQL, purpose=PURPOSE)
    archive = tmp_path / "backup.tar.gz"
    done = cli("backup", "-c", config, "-o", str(archive))
    assert done.returncode == 0, done.stderr
    saved = ledger_records(fed, name)
    assert f"ledger {len(saved)} entries" in done.stdout
    assert "epsilon spent per dataset: pipe_incidents 0.5" in done.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"manifest.json", "state/ledger.sqlite", "state/nonces.sqlite"} <= set(names)
    alice.query(SQL, purpose=PURPOSE)  # the ledger moves on past the backup

    done = cli("restore", str(archive), "-c", config)
    assert done.returncode == 2 and "is serving: stop it before restoring" in done.stderr
    fed.stop_node(node)
    done = cli("restore", str(archive), "-c", config)
    assert done.returncode == 2 and "restoring would forget" in done.stderr
    # A tampered archive is refused whatever --force says.
    bad = tmp_path / "bad"
    with tarfile.open(archive) as tar:
        tar.extractall(bad, filter="data")
    ledger = bad / "state" / "ledger.sqlite"
    data = bytearray(ledger.read_bytes())
    data[-100] ^= 1
    ledger.write_bytes(bytes(data))
    with tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as tar:
        tar.add(bad / "manifest.json", "manifest.json")
        tar.add(bad / "state", "state")
    done = cli("restore", str(tmp_path / "bad.tar.gz"), "-c", config, "--force")
    assert done.returncode == 2
    assert "ledger.sqlite does not match its SHA-256 in the manifest" in done.stderr

    state = node.config.parent / "state"
    shutil.rmtree(state)  # the disk is lost
    done = cli("restore", str(archive), "-c", config)
    assert done.returncode == 0, done.stderr
    assert f"ledger {len(saved)} entries" in done.stdout and "pipe_incidents 0.5" in done.stdout
    fed.start_node(node)
    fed.write_fed_toml()
    assert ledger_records(fed, name)[: len(saved)] == saved
    Federation.from_file(fed.fed_toml).query(SQL, purpose=PURPOSE)
    after = ledger_records(fed, name)
    assert after[: len(saved)] == saved and len(after) > len(saved)


def test_certificate_renewal_keeps_the_ledger_identity(
    fed: LocalFederation, tmp_path: Path
) -> None:
    node = fed.nodes[1]
    name, config = node.spec.name, str(node.config)
    files = pki.party_paths(fed.pki_dir, "node", name)
    old_pem = files.cert.read_bytes()
    before = ledger_records(fed, name)
    fed.stop_node(node)
    csr = tmp_path / "renew.csr"
    done = cli("renew", "request", "-c", config, "-o", str(csr))
    assert done.returncode == 0 and "same signing key" in done.stdout, done.stderr
    # A certificate made from new keys would give the ledger another identity.
    other = pki.request(tmp_path / "other", "node", name)
    done = cli("pki", "sign", str(other.csr), "--dir", str(fed.pki_dir), "--force", "--out",
               str(tmp_path / "other.crt"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cli("pki", "sign", str(csr), "--dir", str(fed.pki_dir), "--force", "--out",
               str(tmp_path / "renewed.crt"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = cli("renew", "install", str(tmp_path / "other.crt"), "-c", config)
    assert done.returncode == 2 and "would change the ledger's identity" in done.stderr
    done = cli("renew", "install", str(tmp_path / "renewed.crt"), "-c", config)
    assert done.returncode == 0 and "same ledger signing key" in done.stdout, done.stderr
    new_pem = files.cert.read_bytes()
    assert new_pem == (tmp_path / "renewed.crt").read_bytes()
    old, new = (x509.load_pem_x509_certificate(p) for p in (old_pem, new_pem))
    assert old.serial_number != new.serial_number and old.public_key() != new.public_key()
    raw = [identity_from_pem(p).signing_key.public_bytes_raw() for p in (old_pem, new_pem)]
    assert raw[0] == raw[1]
    assert cli("check-config", "-c", config).returncode == 0
    fed.start_node(node)
    fed.write_fed_toml()
    Federation.from_file(fed.fed_toml).query(SQL, purpose=PURPOSE)
    after = ledger_records(fed, name)
    assert after[: len(before)] == before and len(after) > len(before)
