from __future__ import annotations

import random

import pytest

from datafed.hazmat import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair


@pytest.fixture(scope="session")
def keypair() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_paillier_keypair(2048)


@pytest.fixture(scope="session")
def pk(keypair: tuple[PaillierPublicKey, PaillierPrivateKey]) -> PaillierPublicKey:
    return keypair[0]


@pytest.fixture(scope="session")
def sk(keypair: tuple[PaillierPublicKey, PaillierPrivateKey]) -> PaillierPrivateKey:
    return keypair[1]


class SeededSource:
    """A deterministic RandomSource for distribution tests."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._r.randrange(n)


@pytest.fixture
def seeded() -> SeededSource:
    return SeededSource(20260101)
