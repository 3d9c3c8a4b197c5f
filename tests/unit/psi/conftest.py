from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed import pki
from datafed.hazmat import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair
from datafed.psi import IdsColumn, PsiJob, ValuesColumns


@dataclass(frozen=True)
class Party:
    cert: bytes
    key: ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Pki:
    ca: bytes
    tax: Party
    bank: Party
    alice: Party
    rogue_bank: Party  # a "city-bank" certificate from another CA


def _party(d: Path, role: str, name: str) -> Party:
    files = pki.issue(d, role, name)
    return Party(files.cert.read_bytes(), pki.load_signing_key(files.signing_key))


@pytest.fixture(scope="session")
def psi_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("psi-pki")
    pki.init_ca(d)
    other = tmp_path_factory.mktemp("rogue-pki")
    pki.init_ca(other, "rogue CA")
    return Pki(
        ca=(d / "ca.crt").read_bytes(),
        tax=_party(d, "node", "tax-bureau"),
        bank=_party(d, "node", "city-bank"),
        alice=_party(d, "analyst", "alice"),
        rogue_bank=_party(other, "node", "city-bank"),
    )


@pytest.fixture(scope="session")
def analyst_keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_paillier_keypair(2048)


@pytest.fixture(scope="session")
def job(analyst_keys: tuple[PaillierPublicKey, PaillierPrivateKey]) -> PsiJob:
    return PsiJob(
        "job-unit",
        IdsColumn("tax-bureau", "taxpayers", "person_id"),
        ValuesColumns("city-bank", "loans", "person_id", "amount"),
        analyst_keys[0].n,
        16,
    )
