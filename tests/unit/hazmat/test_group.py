from __future__ import annotations

import pytest
from nacl import bindings

from datafed.hazmat import InvalidPoint, hash_to_group, is_valid_point, random_scalar, scalar_mult
from tests.vectors.hazmat import load

# A point of order 8 on edwards25519 (libsodium's small-order blocklist), and the identity.
SMALL_ORDER = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
IDENTITY = bytes([1]) + bytes(31)


def test_regression_vectors() -> None:
    for case in load("group")["cases"]:
        assert hash_to_group(case["item"].encode()).hex() == case["point"]


def test_blinding_commutes() -> None:
    a, b = random_scalar(), random_scalar()
    h = hash_to_group(b"citizen-42")
    assert is_valid_point(h)
    assert scalar_mult(a, scalar_mult(b, h)) == scalar_mult(b, scalar_mult(a, h))
    assert scalar_mult(a, h) != scalar_mult(b, h)


def test_domain_separation() -> None:
    assert hash_to_group(b"x") != hash_to_group(b"x", domain=b"other")
    assert hash_to_group(b"x") != hash_to_group(b"y")


@pytest.mark.parametrize(
    "bad",
    [
        IDENTITY,
        SMALL_ORDER,
        bytes(32),
        b"\xff" * 32,
        b"\x00" * 31,
        b"not a point at all, 32 bytes!!!",
    ],
)
def test_invalid_points_rejected(bad: bytes) -> None:
    with pytest.raises(InvalidPoint):
        scalar_mult(random_scalar(), bad)
    assert not is_valid_point(bad)


def test_torsion_component_rejected() -> None:
    h = hash_to_group(b"z")
    mixed = bindings.crypto_core_ed25519_add(h, SMALL_ORDER)  # leaves the prime-order subgroup
    with pytest.raises(InvalidPoint):
        scalar_mult(random_scalar(), mixed)
