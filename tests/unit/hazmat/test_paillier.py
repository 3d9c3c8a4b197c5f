from __future__ import annotations

import gmpy2
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import (
    BatchEncryptor,
    InvalidCiphertext,
    PaillierPrivateKey,
    PaillierPublicKey,
    ciphertext_from_phe,
    ciphertext_to_phe,
    generate_paillier_keypair,
    private_key_from_jwk,
    private_key_from_phe,
    private_key_to_jwk,
    private_key_to_phe,
    public_key_from_jwk,
    public_key_to_jwk,
    public_key_to_phe,
)
from datafed.hazmat._djn import FixedBaseTable, exponent_bits, nadic_mul
from tests.vectors.hazmat import load

VEC = load("paillier")


@pytest.fixture(scope="module")
def kat_keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    p, q = int(VEC["p"], 16), int(VEC["q"], 16)
    pub = PaillierPublicKey(p * q, djn_base=int(VEC["djn_base"], 16))
    return pub, PaillierPrivateKey(pub, p, q)


def test_known_answers_textbook(kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey]) -> None:
    pub, priv = kat_keys
    for case in VEC["textbook"]:
        m, r, c = (int(case[k], 16) for k in ("m", "r", "c"))
        assert int(pub.encrypt_with_r(m, r)) == c
        assert priv.decrypt(pub.ciphertext_from_int(c)) == m


def test_known_answers_djn(kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey]) -> None:
    pub, priv = kat_keys
    table = FixedBaseTable(gmpy2.mpz(pub.djn_base), gmpy2.mpz(pub.n_squared), 1024)
    n2 = pub.n_squared
    for case in VEC["djn"]:
        m, alpha, c = (int(case[k], 16) for k in ("m", "alpha", "c"))
        assert (1 + m * pub.n) * int(table.power(alpha)) % n2 == c
        assert priv.decrypt(pub.ciphertext_from_int(c)) == m


@pytest.mark.parametrize("window", [8, 9, 10])
def test_fixed_base_windows_agree(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey], window: int
) -> None:
    pub = kat_keys[0]
    table = FixedBaseTable(gmpy2.mpz(pub.djn_base), gmpy2.mpz(pub.n_squared), 130, window)
    for e in (0, 1, 2**129 + 12345, 2**130 - 1):
        assert int(table.power(e)) == pow(pub.djn_base, e, pub.n_squared)
    with pytest.raises(ValueError, match="exponent must be in"):
        table.power(2**130)


def test_round_trip_and_homomorphism(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    a, b = pk.encrypt(1234), pk.encrypt(-34)
    assert sk.decrypt(a) == 1234
    assert sk.decrypt_signed(b) == -34
    assert sk.decrypt(a + b) == 1200
    assert sk.decrypt(a + 5) == 1239
    assert sk.decrypt(pk.mul_plain(a, 3)) == 3702
    assert sk.decrypt(pk.add_many([a, a, a])) == 3702
    assert sk.decrypt(pk.add_many([])) == 0
    assert sk.decrypt_many([a, b]) == [1234, pk.n - 34]
    assert sk.decrypt_many([a, b, a], threads=2) == [1234, pk.n - 34, 1234]


def test_encryption_is_randomized(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    a, b = pk.encrypt(7), pk.encrypt(7)
    assert a != b
    c = pk.rerandomize(a)
    assert c != a and sk.decrypt(c) == 7


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=-(2**200), max_value=2**200), min_size=1, max_size=5))
def test_sum_property(pk: PaillierPublicKey, sk: PaillierPrivateKey, values: list[int]) -> None:
    assert sk.decrypt_signed(pk.add_many(pk.encrypt_many(values))) == sum(values)


def test_strict_mode(keypair: tuple[PaillierPublicKey, PaillierPrivateKey]) -> None:
    pub, priv = keypair
    strict = PaillierPublicKey(pub.n, strict=True)
    assert exponent_bits(2048, strict=True) == 2048 + 128
    assert exponent_bits(2048, strict=False) == 1024
    assert priv.decrypt(strict.encrypt(99) + pub.encrypt(1)) == 100


def test_modulus_floor_message() -> None:
    with pytest.raises(
        ValueError, match=r"^Paillier modulus must be at least 2048 bits, got 1024$"
    ):
        generate_paillier_keypair(1024)
    with pytest.raises(ValueError, match="must be even"):
        generate_paillier_keypair(2049)
    with pytest.raises(ValueError, match="at least 2048 bits, got 1024"):
        PaillierPublicKey(phe.generate_paillier_keypair(n_length=1024)[0].n)
    with pytest.raises(TypeError):
        generate_paillier_keypair("2048")  # type: ignore[arg-type]


def test_plaintext_range(pk: PaillierPublicKey) -> None:
    with pytest.raises(ValueError, match="out of range"):
        pk.encrypt(pk.n)
    with pytest.raises(TypeError):
        pk.encrypt(1.5)  # type: ignore[arg-type]


def test_wire_validation(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    c = pk.encrypt(5)
    assert sk.decrypt(pk.ciphertext_from_bytes(c.to_bytes())) == 5
    for bad in (0, pk.n_squared, pk.n_squared + 1, pk.n, sk.p * 12345):
        with pytest.raises(InvalidCiphertext):
            pk.ciphertext_from_int(bad)
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_bytes(c.to_bytes()[1:])
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_bytes(b"\xff" * pk.ciphertext_bytes)  # >= n^2
    assert str(InvalidCiphertext()) == "invalid ciphertext"


def test_foreign_key_rejected(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    other = PaillierPublicKey(public_key_to_phe(pk).n + 2)  # some other odd modulus
    with pytest.raises(ValueError, match="different Paillier key"):
        sk.decrypt(other.ciphertext_from_int(2))


def test_phe_interop(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    phe_sk = private_key_to_phe(sk)
    ours = pk.encrypt(31337)
    assert phe_sk.decrypt(ciphertext_to_phe(ours)) == 31337
    theirs = phe_sk.public_key.encrypt(1000)
    total = ciphertext_from_phe(pk, theirs) + ours
    assert sk.decrypt(total) == 32337
    assert private_key_from_phe(phe_sk) == sk
    with pytest.raises(ValueError, match="exponent 0"):
        ciphertext_from_phe(pk, phe_sk.public_key.encrypt(0.5))


def test_jwk_matches_pheutil_form(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    jwk = private_key_to_jwk(sk, kid="k1")
    assert jwk["kty"] == "DAJ" and jwk["key_ops"] == ["decrypt"]
    assert jwk["pub"]["alg"] == "PAI-GN1" and jwk["pub"]["key_ops"] == ["encrypt"]
    # phe's own decoders read our fields.
    assert phe.util.base64_to_int(jwk["pub"]["n"]) == pk.n
    assert phe.util.base64_to_int(jwk["p"]) * phe.util.base64_to_int(jwk["q"]) == pk.n
    # and ours read phe's encoding.
    phe_form = {
        "kty": "DAJ",
        "alg": "PAI-GN1",
        "key_ops": ["encrypt"],
        "n": phe.util.int_to_base64(pk.n),
    }
    assert public_key_from_jwk(phe_form) == pk
    assert private_key_from_jwk(jwk) == sk
    assert public_key_from_jwk(public_key_to_jwk(pk)) == pk
    with pytest.raises(ValueError, match="not a Paillier public key"):
        public_key_from_jwk({"kty": "RSA", "n": jwk["pub"]["n"]})


def test_batch_encryptor_two_processes(pk: PaillierPublicKey, sk: PaillierPrivateKey) -> None:
    values = list(range(-20, 20))
    with BatchEncryptor(pk, workers=2, chunk=8) as enc:
        cts = enc.encrypt_many(values)
    assert [sk.decrypt_signed(c) for c in cts] == values


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**1024 - 1))
def test_fixed_base_table_matches_powmod(
    kat_table: tuple[FixedBaseTable, int, int], exponent: int
) -> None:
    table, base, modulus = kat_table
    assert int(table.power(exponent)) == pow(base, exponent, modulus)


@pytest.fixture(scope="module")
def kat_table(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey],
) -> tuple[FixedBaseTable, int, int]:
    pub = kat_keys[0]
    return (
        FixedBaseTable(gmpy2.mpz(pub.djn_base), gmpy2.mpz(pub.n_squared), 1024),
        pub.djn_base,
        pub.n_squared,
    )


# Tables kept in base n (``root=n``: the path every PaillierPublicKey takes) against the
# same known answers and against plain modular arithmetic.


@pytest.mark.parametrize("window", [5, 8, 10])
def test_known_answers_djn_base_n_table(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey], window: int
) -> None:
    pub, priv = kat_keys
    n = gmpy2.mpz(pub.n)
    table = FixedBaseTable(gmpy2.mpz(pub.djn_base), n * n, 1024, window, root=n)
    for case in VEC["djn"]:
        m, alpha, c = (int(case[k], 16) for k in ("m", "alpha", "c"))
        assert (1 + m * pub.n) * int(table.power(alpha)) % pub.n_squared == c
        assert priv.decrypt(pub.ciphertext_from_int(c)) == m


def test_a_key_encrypts_through_its_base_n_table(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey],
) -> None:
    pub, priv = kat_keys
    key = PaillierPublicKey(pub.n, djn_base=pub.djn_base)
    key.precompute()
    values = [0, 1, pub.n - 1, 2**64 + 7]
    assert [priv.decrypt(c) for c in key.encrypt_many(values)] == values


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**1024 - 1))
def test_base_n_table_matches_powmod(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey], exponent: int
) -> None:
    pub = kat_keys[0]
    n = gmpy2.mpz(pub.n)
    table = _base_n_table(pub.djn_base, pub.n)
    assert int(table.power(exponent)) == pow(pub.djn_base, exponent, pub.n_squared)
    assert table.power(exponent) < n * n


_TABLES: dict[int, FixedBaseTable] = {}


def _base_n_table(base: int, n: int) -> FixedBaseTable:
    if n not in _TABLES:
        root = gmpy2.mpz(n)
        _TABLES[n] = FixedBaseTable(gmpy2.mpz(base), root * root, 1024, 8, root=root)
    return _TABLES[n]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_nadic_mul_is_the_product_mod_n_squared(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey], data: st.DataObject
) -> None:
    n = kat_keys[0].n
    x = data.draw(st.integers(min_value=0, max_value=n * n - 1))
    y = data.draw(st.integers(min_value=0, max_value=n * n - 1))
    mn = gmpy2.mpz(n)
    lo, hi = nadic_mul(gmpy2.mpz(x % n), gmpy2.mpz(x // n), gmpy2.mpz(y % n), gmpy2.mpz(y // n), mn)
    assert 0 <= lo < n and 0 <= hi < n
    assert int(lo + hi * mn) == x * y % (n * n)


def test_a_base_n_table_refuses_a_wrong_root_and_a_long_exponent(
    kat_keys: tuple[PaillierPublicKey, PaillierPrivateKey],
) -> None:
    pub = kat_keys[0]
    n = gmpy2.mpz(pub.n)
    with pytest.raises(ValueError, match="square root of the modulus"):
        FixedBaseTable(gmpy2.mpz(pub.djn_base), n * n, 64, 5, root=n + 2)
    table = FixedBaseTable(gmpy2.mpz(pub.djn_base), n * n, 64, 5, root=n)
    with pytest.raises(ValueError, match="exponent must be in"):
        table.power(2**64)
    with pytest.raises(ValueError, match="exponent must be in"):
        table.power(-1)


def test_generated_moduli_are_blum_integers() -> None:
    """p = q = 3 mod 4: the condition DJN's base -x^2 relies on (_paillier_keygen)."""
    from datafed.hazmat import _paillier_keygen

    for _ in range(3):
        p = _paillier_keygen._random_prime(1024)
        assert p % 4 == 3 and p.bit_length() == 1024 and gmpy2.is_prime(p)
