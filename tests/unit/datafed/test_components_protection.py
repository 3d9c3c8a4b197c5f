import asyncio
import hashlib
import statistics

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.errors import ProtocolError
from datafed.modes import (
    MODES,
    ModeContext,
    NodeEnv,
    PaillierMode,
    PlainMode,
    check_paillier_modulus,
    mode_class,
)
from datafed.proto.v1 import modes_pb2
from datafed.query.components import Component, components, decode_fixed, encode_fixed, finalize
from datafed.query.sql import parse_sql

BITS = 16
ENV = NodeEnv(
    "n1", "job", ed25519.Ed25519PrivateKey.generate(), b"", binding="ab" * 32
)  # plain mode needs no keys


NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def fed_keys(pki_dir):
    from datafed import pki

    for n in NODES:
        if not pki.party_paths(pki_dir, "node", n).cert.exists():
            pki.issue(pki_dir, "node", n)
    ca = (pki_dir / "ca.crt").read_bytes()
    certs = {n: pki.party_paths(pki_dir, "node", n).cert.read_bytes() for n in NODES}
    keys = {n: pki.load_signing_key(pki.party_paths(pki_dir, "node", n).signing_key) for n in NODES}
    return ca, certs, keys


def envs(fed_keys, job="job", binding=None):
    ca, _, keys = fed_keys
    bound = binding or hashlib.sha256(job.encode()).hexdigest()
    return [NodeEnv(n, job, keys[n], ca, binding=bound, roster=NODES) for n in NODES]


@pytest.fixture(scope="module")
def paillier(fed_keys):
    mode = PaillierMode(2048)
    params = asyncio.run(mode.params(ModeContext("job", NODES, fed_keys[1])))
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


def test_paillier_totals_with_negative_values(paillier, fed_keys):
    mode, params = paillier
    comps = [Component("sum", "x"), Component("count", "*"), Component("sum", "y")]
    per_node = [[5, -7, 0], [-10, 3, 1 << 40], [1, 1, -(1 << 40)]]
    payloads = [
        PaillierMode.protect(e, params, v) for e, v in zip(envs(fed_keys), per_node, strict=True)
    ]
    assert mode.combine(payloads, comps, 1) == [-4, -3, 0]


def test_many_groups_pack_into_few_ciphertexts(paillier, fed_keys):
    mode, params = paillier
    comps = [Component("sum", "x"), Component("count", "*")]
    vectors = [[(g * 7 + i) * (1 if g % 2 else -1) for g in range(200)] for i in range(3)]
    payloads = [
        PaillierMode.protect(e, params, v) for e, v in zip(envs(fed_keys), vectors, strict=True)
    ]
    n_cts = len(modes_pb2.PaillierPayload.FromString(payloads[0]).ciphertexts)
    assert n_cts < 20  # 200 values, ~28 slots of 67 bits per 2048-bit plaintext
    assert mode.combine(payloads, comps, 100) == [sum(col) for col in zip(*vectors, strict=True)]


def _single_view(mode, params, fed_keys, value, job):
    """What the analyst sees of node n1 alone: its decrypted (masked) plaintext."""
    e = envs(fed_keys, job)
    payload = PaillierMode.protect(e[0], params_for(mode, fed_keys, job), [value])
    (raw,) = modes_pb2.PaillierPayload.FromString(payload).ciphertexts
    pub, priv = mode._keys
    return priv.decrypt(pub.ciphertext_from_bytes(raw)), pub.n


def params_for(mode, fed_keys, job):
    return asyncio.run(mode.params(ModeContext(job, NODES, fed_keys[1])))


def test_analyst_cannot_open_one_node(paillier, fed_keys):
    """The analyst's view of one node is uniform mod n whether it holds 0 or 10^6."""
    mode, params = paillier
    buckets = 8
    critical = 29.88  # chi-square, 7 degrees of freedom, p = 1e-4
    for value in (0, 10**6):
        counts = [0] * buckets
        for t in range(120):
            m, n = _single_view(mode, params, fed_keys, value, f"job-{value}-{t}")
            counts[m * buckets // n] += 1
        expected = sum(counts) / buckets
        stat = sum((c - expected) ** 2 / expected for c in counts)
        assert stat < critical, counts
    # and without masks the value would show: the unmasked packed plaintext is tiny
    from datafed.modes._paillier import _packer

    plain = _packer(mode._keys[0].n, 3).pack([10**6])[0]
    assert plain < mode._keys[0].n >> 1000


def test_missing_node_is_detected(paillier, fed_keys):
    mode, params = paillier
    e = envs(fed_keys)
    payloads = [PaillierMode.protect(x, params, [1, 2]) for x in e[:2]]
    with pytest.raises(ProtocolError, match="out of range"):
        mode.combine(payloads, [Component("sum", "x"), Component("count", "*")], 1)


def test_peer_certificates_are_verified(paillier, fed_keys, tmp_path):
    from datafed import pki

    _, params = paillier
    msg = modes_pb2.PaillierParams.FromString(params)
    pki.init_ca(tmp_path)
    rogue = pki.issue(tmp_path, "node", "n2").cert.read_bytes()
    bad = modes_pb2.PaillierParams(
        n=msg.n, peer_certificates=[msg.peer_certificates[0], rogue], value_bits=64
    )
    with pytest.raises(ValueError, match="peer certificate refused"):
        PaillierMode.protect(envs(fed_keys)[0], bad.SerializeToString(), [1])
    others = modes_pb2.PaillierParams(
        n=msg.n, peer_certificates=msg.peer_certificates[1:], value_bits=64
    )
    with pytest.raises(ValueError, match="not among the listed participants"):
        PaillierMode.protect(envs(fed_keys)[0], others.SerializeToString(), [1])


def test_our_ciphertexts_decrypt_with_phe(paillier, fed_keys):
    from datafed.hazmat import ciphertext_to_phe, private_key_to_phe

    mode, _ = paillier
    pub, priv = mode._keys
    c = pub.encrypt(12345)
    phe_priv = private_key_to_phe(priv)
    assert phe_priv.decrypt(ciphertext_to_phe(c)) == 12345


def test_bad_paillier_payloads_refused(paillier):
    mode, _ = paillier
    comps = [Component("count", "*")]
    n2 = mode._keys[0].n ** 2
    for bad in (
        modes_pb2.PaillierPayload(ciphertexts=[b"\x00"]).SerializeToString(),
        modes_pb2.PaillierPayload(ciphertexts=[n2.to_bytes(512, "big")]).SerializeToString(),
        modes_pb2.PaillierPayload(ciphertexts=[b"\x01", b"\x01"]).SerializeToString(),
        b"\xff\xff garbage",
    ):
        with pytest.raises(ProtocolError):
            mode.combine([bad], comps, 1)


def test_small_or_malformed_paillier_params_refused(fed_keys):
    env = envs(fed_keys)[0]
    small = modes_pb2.PaillierParams(
        n=(2**1023 + 1).to_bytes(128, "big"), value_bits=64
    ).SerializeToString()
    with pytest.raises(ValueError, match="at least 2048 bits, got 1024"):
        PaillierMode.protect(env, small, [1])
    with pytest.raises(ValueError, match="malformed"):
        PaillierMode.protect(env, b"\xff\xff", [1])
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
