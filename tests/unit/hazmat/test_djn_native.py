"""The C loop of DJN fixed-base tables (``datafed/hazmat/_djn_native.c``).

Every result is checked against ``pow`` and against the Python table (the two layouts
must agree bit for bit), on the known-answer vectors, on exponents at the edges of
every window, and on moduli of 2048 and 3072 bits; every argument the C code checks is
refused with a clear error. The C loop must be built wherever the suite runs, unless
``DATAFED_NATIVE=0`` says the run is of the Python path on purpose.
"""

from __future__ import annotations

import os
import random

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import (
    BatchEncryptor,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
    native_available,
    use_native,
)
from datafed.hazmat import _djn_native as native
from datafed.hazmat._djn import FixedBaseTable
from tests.vectors.hazmat import load

VEC = load("paillier")


def test_the_c_loop_is_built_where_the_suite_runs() -> None:
    assert native_available() or os.environ.get("DATAFED_NATIVE") == "0", (
        "datafed.hazmat._djn_native is not built: `make setup` builds it (gcc and "
        "libgmp-dev); set DATAFED_NATIVE=0 to test the Python path on purpose"
    )


def test_the_c_loop_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("datafed.hazmat._djn._use_native", True)
    use_native(False)
    assert not native_available()
    n = gmpy2.mpz(_odd(2048, 1))
    assert not FixedBaseTable(gmpy2.mpz(3), n * n, 64, 5, root=n).native


def _odd(bits: int, seed: int) -> int:
    return random.Random(seed).getrandbits(bits) | (1 << (bits - 1)) | 1


def _unit(n: int, seed: int) -> int:
    rng = random.Random(seed)
    while True:
        x = rng.randrange(2, n * n)
        if gmpy2.gcd(x, n) == 1:
            return x


@pytest.fixture(scope="module")
def kat() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    p, q = int(VEC["p"], 16), int(VEC["q"], 16)
    pub = PaillierPublicKey(p * q, djn_base=int(VEC["djn_base"], 16))
    return pub, PaillierPrivateKey(pub, p, q)


@pytest.mark.parametrize("window", [5, 8, 10])
def test_known_answers(kat: tuple[PaillierPublicKey, PaillierPrivateKey], window: int) -> None:
    pub, priv = kat
    n = gmpy2.mpz(pub.n)
    table = FixedBaseTable(gmpy2.mpz(pub.djn_base), n * n, 1024, window, root=n, native=True)
    assert table.native
    for case in VEC["djn"]:
        m, alpha, c = (int(case[k], 16) for k in ("m", "alpha", "c"))
        assert int(table.power(alpha, m)) == c  # the encryption, plaintext folded in
        assert (1 + m * pub.n) * int(table.power(alpha)) % pub.n_squared == c
        assert priv.decrypt(pub.ciphertext_from_int(c)) == m


def _edges(bits: int, window: int) -> list[int]:
    """Exponents at windows' edges: empty, single, full and alternating digits.

    The first two windows, the last two (the top one may be partial) and four others.
    """
    top = (1 << bits) - 1
    out = [0, 1, top, 1 << (bits - 1), top ^ 1]
    starts = list(range(0, bits, window))
    picked = starts[:2] + starts[-2:] + random.Random(bits).sample(starts, min(4, len(starts)))
    for i in picked:
        out += [1 << i, ((1 << window) - 1) << i & top, top ^ (((1 << window) - 1) << i & top)]
    out.append(int("10" * (bits // 2) + "1" * (bits % 2), 2))
    return out


@pytest.mark.parametrize(
    ("bits", "exponent_bits", "window"),
    [(2048, 1024, 7), (2048, 130, 9), (2048, 2176, 5), (3072, 1536, 6), (3072, 67, 4)],
)
def test_the_c_loop_equals_pow_and_the_python_table(
    bits: int, exponent_bits: int, window: int
) -> None:
    n = _odd(bits, bits + window)
    base = _unit(n, exponent_bits)
    mn = gmpy2.mpz(n)
    c_table = FixedBaseTable(gmpy2.mpz(base), mn * mn, exponent_bits, window, root=mn, native=True)
    py_table = FixedBaseTable(
        gmpy2.mpz(base), mn * mn, exponent_bits, window, root=mn, native=False
    )
    assert c_table.native and not py_table.native
    rng = random.Random(window)
    exponents = _edges(exponent_bits, window) + [rng.getrandbits(exponent_bits) for _ in range(8)]
    for e in exponents:
        shift = rng.randrange(n)
        expected = gmpy2.powmod(base, e, n * n)
        assert c_table.power(e) == py_table.power(e) == expected, e
        assert c_table.power(e, shift) == py_table.power(e, shift)
        assert c_table.power(e, shift) == expected * (1 + shift * n) % (n * n)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**1024 - 1), st.integers(min_value=0))
def test_any_exponent_and_plaintext(
    kat: tuple[PaillierPublicKey, PaillierPrivateKey], exponent: int, m: int
) -> None:
    pub = kat[0]
    m %= pub.n
    table = _table(pub)
    c = int(table.power(exponent, m))
    assert (
        c == gmpy2.powmod(pub.djn_base, exponent, pub.n_squared) * (1 + m * pub.n) % pub.n_squared
    )


_TABLES: dict[int, FixedBaseTable] = {}


def _table(pub: PaillierPublicKey) -> FixedBaseTable:
    if pub.n not in _TABLES:
        n = gmpy2.mpz(pub.n)
        _TABLES[pub.n] = FixedBaseTable(
            gmpy2.mpz(pub.djn_base), n * n, 1024, 6, root=n, native=True
        )
    return _TABLES[pub.n]


def test_encryptions_decrypt_and_are_fresh() -> None:
    pub, priv = generate_paillier_keypair(2048)
    values = [0, 1, -1, 2**100, pub.n - 1, -(pub.n // 2)]
    cts = pub.encrypt_many(values)
    assert [priv.decrypt_signed(c) for c in cts[:4]] == values[:4]
    assert priv.decrypt(cts[4]) == pub.n - 1
    assert priv.decrypt_signed(cts[5]) == -(pub.n // 2)
    again = pub.encrypt_many(values)
    assert all(a.value != b.value for a, b in zip(cts, again, strict=True))


def test_a_base_that_is_not_a_unit_is_refused() -> None:
    n = gmpy2.mpz(_odd(2048, 3))
    with pytest.raises(ValueError, match="not a unit"):
        FixedBaseTable(n * 5, n * n, 64, 5, root=n, native=True)


def test_a_plaintext_shift_out_of_range_is_refused(
    kat: tuple[PaillierPublicKey, PaillierPrivateKey],
) -> None:
    pub = kat[0]
    table = _table(pub)
    for shift in (pub.n, -1):
        with pytest.raises(ValueError, match="shift"):
            table.power(5, shift)
    plain = FixedBaseTable(gmpy2.mpz(pub.djn_base), gmpy2.mpz(pub.n_squared), 64, 5)
    with pytest.raises(ValueError, match="shift needs a table with a root"):
        plain.power(5, 3)


def test_the_c_module_checks_its_arguments() -> None:
    n = _odd(2048, 9)
    nb = n.to_bytes(256, "little")
    g = _unit(n, 9)
    base = (g % n).to_bytes(256, "little") + (g // n % n).to_bytes(256, "little")
    table = native.build(nb, base, 2, 3)
    assert len(table) == 2 * 8 * 512
    cases = [
        (lambda: native.build(nb[:100], base, 2, 3), "whole limbs"),
        (lambda: native.build(b"\1" + b"\0" * 255, base, 2, 3), "top limb"),
        (lambda: native.build(nb, base[:-8], 2, 3), "two digits"),
        (lambda: native.build(nb, base, 2, 0), "window"),
        (lambda: native.build(nb, base, 2, 17), "window"),
        (lambda: native.build(nb, base, 0, 3), "rows"),
        (lambda: native.power(table[:-8], nb, 2, 3, b"\1"), "table size"),
        (lambda: native.power(table, nb, 2, 3, b"\1\1"), "exponent longer"),
        (lambda: native.power(table, nb, 2, 3, b"\x40"), "exponent longer"),  # bit 6 of 6
        (lambda: native.power(table, memoryview(b"\0" + nb)[1:], 2, 3, b"\1"), "aligned"),
        (lambda: native.build(nb, memoryview(b"\0" + base)[1:], 2, 3), "aligned"),
        (lambda: native.power(table, nb, 2, 3, b"\1", nb), "shift must be below n"),
        (lambda: native.power(table, nb, 2, 3, b"\1", b"\1"), "shift must be below n"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    expected = gmpy2.powmod(g, 0b101011, n * n)
    assert int.from_bytes(native.power(table, nb, 2, 3, bytes([0b101011])), "little") == expected


def test_batch_encryption_without_the_c_loop_uses_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback path: worker processes (which build their own tables)."""
    monkeypatch.setattr("datafed.hazmat._djn._use_native", False)
    pub, priv = generate_paillier_keypair(2048)
    values = list(range(-6, 6))
    with BatchEncryptor(pub, workers=2, chunk=4) as enc:
        assert type(enc._pool).__name__ == "ProcessPoolExecutor"
        cts = enc.encrypt_many(values)
    assert [priv.decrypt_signed(c) for c in cts] == values
