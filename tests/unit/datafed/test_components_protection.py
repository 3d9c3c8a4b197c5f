import asyncio
import statistics

import phe
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import ProtocolError
from datafed.proto.v1 import modes_pb2
from datafed.query.components import Component, components, decode_fixed, encode_fixed, finalize
from datafed.query.modes import (
    MODES,
    NodeEnv,
    PaillierMode,
    PlainMode,
    check_paillier_modulus,
    mode_class,
)
from datafed.query.sql import parse_sql

BITS = 16
ENV = NodeEnv("n1", "job", ed25519.Ed25519PrivateKey.generate(), b"")


@pytest.fixture(scope="module")
def paillier():
    mode = PaillierMode(2048)
    params = asyncio.run(mode.params())
    return mode, params


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


def test_paillier_totals_with_negative_values(paillier):
    mode, params = paillier
    comps = [Component("sum", "x"), Component("count", "*"), Component("sum", "y")]
    per_node = [[5, -7, 0], [-10, 3, 1 << 40], [1, 1, -(1 << 40)]]
    payloads = [PaillierMode.protect(ENV, params, v) for v in per_node]
    cts = [
        int.from_bytes(c, "big")
        for c in modes_pb2.PaillierPayload.FromString(payloads[0]).ciphertexts
    ]
    assert all(c != v for c, v in zip(cts, per_node[0], strict=True))
    assert mode.combine(payloads, comps, 1) == [-4, -3, 0]


def test_our_ciphertexts_decrypt_with_phe(paillier):
    mode, params = paillier
    payload = PaillierMode.protect(ENV, params, [12345])
    (raw,) = modes_pb2.PaillierPayload.FromString(payload).ciphertexts
    pub, priv = mode._keys
    assert priv.decrypt(phe.EncryptedNumber(pub, int.from_bytes(raw, "big"))) == 12345


def test_bad_paillier_payloads_refused(paillier):
    mode, _ = paillier
    comps = [Component("count", "*")]
    nsq = int(mode._keys[0].nsquare)
    for bad in (
        modes_pb2.PaillierPayload(ciphertexts=[b"\x00"]).SerializeToString(),
        modes_pb2.PaillierPayload(ciphertexts=[nsq.to_bytes(600, "big")]).SerializeToString(),
        modes_pb2.PaillierPayload(ciphertexts=[b"\x01", b"\x01"]).SerializeToString(),
        b"\xff\xff garbage",
    ):
        with pytest.raises(ProtocolError):
            mode.combine([bad], comps, 1)


def test_small_or_malformed_paillier_params_refused():
    small = modes_pb2.PaillierParams(n=(2**1023 + 1).to_bytes(128, "big")).SerializeToString()
    with pytest.raises(ValueError, match="at least 2048 bits, got 1024"):
        PaillierMode.protect(ENV, small, [1])
    with pytest.raises(ValueError, match="malformed"):
        PaillierMode.protect(ENV, b"\xff\xff", [1])
    with pytest.raises(ValueError, match="at least 2048"):
        PaillierMode(1024)


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


def test_plain_mode_merges_min_max_and_refuses_overflow():
    comps = [Component("min", "x"), Component("max", "x"), Component("sum", "x")]
    payloads = [PlainMode.protect(ENV, b"", v) for v in ([3, 9, 1], [2, 5, 4])]
    assert PlainMode().combine(payloads, comps, 1) == [2, 9, 5]
    with pytest.raises(OverflowError):
        PlainMode.protect(ENV, b"", [1 << 64])
    with pytest.raises(ProtocolError):
        PlainMode().combine([payloads[0]], comps, 2)


def test_registry():
    assert set(MODES) >= {"plain", "paillier"}
    with pytest.raises(ValueError, match="unknown protection mode 'rot13'"):
        mode_class("rot13")
