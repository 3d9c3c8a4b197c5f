import statistics

import phe
import pytest

from datafed.errors import ProtocolError
from datafed.query.components import Component, components, decode_fixed, encode_fixed, finalize
from datafed.query.protection import (
    PaillierSession,
    ProtectionSpec,
    check_paillier_modulus,
    protect,
)
from datafed.query.sql import parse_sql

BITS = 16


@pytest.fixture(scope="module")
def session():
    return PaillierSession(2048)


def test_components_are_deduplicated_and_ordered():
    spec = parse_sql("SELECT SUM(x), AVG(x), VAR(x), COUNT(*) FROM t")
    assert components(spec) == (
        Component("sum", "x"),
        Component("count", "x"),
        Component("sumsq", "x"),
        Component("count", "*"),
    )


def test_finalize_matches_statistics():
    xs = [1.5, 2.25, -3.0, 10.0, 4.125]
    spec = parse_sql("SELECT SUM(x), AVG(x), VAR(x), COUNT(*), MIN(x), MAX(x) FROM t")
    totals = {
        Component("sum", "x"): encode_fixed(sum(xs), BITS),
        Component("count", "x"): len(xs),
        Component("sumsq", "x"): encode_fixed(sum(v * v for v in xs), BITS),
        Component("count", "*"): len(xs),
        Component("min", "x"): encode_fixed(min(xs), BITS),
        Component("max", "x"): encode_fixed(max(xs), BITS),
    }
    s, avg, var, n, lo, hi = finalize(spec, totals, BITS)
    assert s == pytest.approx(sum(xs))
    assert avg == pytest.approx(statistics.fmean(xs))
    assert var == pytest.approx(statistics.variance(xs), rel=1e-6)
    assert (n, lo, hi) == (5, -3.0, 10.0)


def test_empty_group_gives_none_not_division_error():
    spec = parse_sql("SELECT AVG(x), VAR(x) FROM t")
    zero = dict.fromkeys(components(spec), 0)
    assert finalize(spec, zero, BITS) == (None, None)


def test_fixed_point_roundtrip_and_refusals():
    assert decode_fixed(encode_fixed(-2.5, BITS), BITS) == -2.5
    assert encode_fixed(7, BITS) == 7 << BITS
    assert encode_fixed(None, BITS) == 0
    with pytest.raises(ValueError, match="non-finite"):
        encode_fixed(float("nan"), BITS)


def test_paillier_totals_with_negative_values(session):
    pspec = ProtectionSpec(mode="paillier", fixed_point_bits=BITS, paillier_n=session.n)
    per_node = [[5, -7, 0], [-10, 3, 1 << 40], [1, 1, -(1 << 40)]]
    cts = [protect(pspec, v) for v in per_node]
    assert all(c != v for c, v in zip(cts[0], per_node[0], strict=True))
    assert session.decrypt(session.combine(cts)) == [-4, -3, 0]


def test_our_ciphertexts_decrypt_with_phe(session):
    pspec = ProtectionSpec(mode="paillier", fixed_point_bits=BITS, paillier_n=session.n)
    (c,) = protect(pspec, [12345])
    assert session._private_key.decrypt(phe.EncryptedNumber(session.public_key, c)) == 12345


def test_out_of_range_ciphertext_refused(session):
    with pytest.raises(ProtocolError):
        session.combine([[0]])
    with pytest.raises(ProtocolError):
        session.combine([[session.public_key.nsquare]])


@pytest.mark.parametrize(
    ("n", "msg"),
    [
        (2**1023 + 1, "at least 2048 bits, got 1024"),
        (2**2048, "must be odd"),
        (2**9000 + 1, "at most 8192"),
    ],
)
def test_modulus_checks(n, msg):
    with pytest.raises(ValueError, match=msg):
        check_paillier_modulus(n)


def test_protection_spec_refusals():
    with pytest.raises(ValueError, match="unknown protection"):
        ProtectionSpec(mode="rot13", fixed_point_bits=16)
    with pytest.raises(ValueError, match="public modulus"):
        ProtectionSpec(mode="paillier", fixed_point_bits=16)
    with pytest.raises(ValueError, match="fixed_point_bits"):
        ProtectionSpec(mode="plain", fixed_point_bits=99)
    with pytest.raises(OverflowError):
        protect(ProtectionSpec(mode="plain", fixed_point_bits=16), [1 << 64])
