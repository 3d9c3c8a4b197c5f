"""``ckks`` mode in memory: totals within the error bound, parameter checks, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest

from datafed.errors import ProtocolError
from datafed.hazmat import HeContext, HeParams, HePublicContext
from datafed.modes import CkksMode
from datafed.modes._envelope import open_sealed, peers, seal
from datafed.proto.v1 import protocol_pb2
from tests.unit.datafed.mode_harness import BITS, COMPS, NODES, Harness, plain_total
from tests.unit.datafed.mode_harness import mode_pki as _mode_pki

mode_pki = _mode_pki  # the fixture
A, B, C = NODES
ONE = 1 << BITS


@pytest.fixture(scope="module")
def mode() -> CkksMode:
    return CkksMode()  # one key pair for the module: keygen is the slow part


def values(a: list[int], b: list[int], c: list[int]) -> dict[str, list[int]]:
    return {A: a, B: b, C: c}


def assert_within_bound(got: list[int], want: list[int], bound: float) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        unit = 1.0 / ONE if COMPS[i % len(COMPS)].scaled else 1.0
        assert abs(g - w) * unit <= bound, (i, g, w, bound)


def test_totals_within_error_bound(mode_pki, mode):
    rng = np.random.default_rng(5)
    vals = {
        n: [
            int(v)
            for pair in zip(
                rng.integers(-(10**6) * ONE, 10**6 * ONE, 50),
                rng.integers(0, 10**4, 50),
                strict=True,
            )
            for v in pair
        ]
        for n in NODES
    }
    run = Harness(mode_pki).run(mode, vals)
    bound = run.combined.error_bound
    assert bound is not None and 0 < bound < 0.05
    assert_within_bound(run.combined.values, plain_total(vals), bound)
    counts = run.combined.values[1::2]
    assert counts == plain_total(vals)[1::2]  # count errors are below 1/2: exact after rounding
    assert run.combined.nodes == NODES


def test_a_value_beyond_the_analysts_bound_saturates_instead_of_refusing(mode_pki, mode):
    """Issue 17, class 4: a node whose aggregate exceeded ``value_bound`` refused by name --
    an oracle on its SUM. Now it carries the bound: the analyst's total says nothing more
    than that the bound was reached."""
    bound = mode.value_bound
    over = int(bound * 8) * ONE  # far beyond the bound the analyst chose
    vals = values([over, 1], [ONE, 1], [ONE, 1])
    run = Harness(mode_pki).run(mode, vals)
    assert_within_bound(run.combined.values, [int(bound + 2) * ONE, 3], run.combined.error_bound)


def test_views_aggregator_holds_no_key_analyst_sees_only_the_sum(mode_pki, mode):
    """Aggregator: ciphertexts under a key it does not hold.  Analyst: one sum, the same
    (within the bound) whether A=0, B=10^6 or A=10^6, B=0."""
    sums = []
    for a, b in ((0, 10**6), (10**6, 0)):
        h = Harness(mode_pki)
        run = h.run(mode, values([a * ONE, 1], [b * ONE, 1], [7 * ONE, 1]))
        state = run.session.states[A]
        assert not hasattr(state.context, "decrypt")
        assert not state.context._context.has_secret_key()
        assert [r.node for r in run.session.log] == [A]  # the analyst got one reply
        sums.append(run.combined)
    assert_within_bound(sums[0].values, sums[1].values, 2 * sums[0].error_bound)
    assert sums[0].values[1] == sums[1].values[1] == 3


def _params(h: Harness, context_bytes: bytes) -> bytes:
    return protocol_pb2.CkksParams(
        public_context=context_bytes,
        aggregator_certificate=h.pki.certs[A],
        participant_certificates=[h.pki.certs[n] for n in NODES],
    ).SerializeToString()


def _with_header(raw: bytes, **changes: object) -> bytes:
    magic, header, body = raw.split(b"\n", 2)
    fields = json.loads(header)
    fields.update(changes)
    return magic + b"\n" + json.dumps(fields).encode() + b"\n" + body


def test_nodes_refuse_weak_or_inconsistent_contexts(mode_pki, mode):
    h = Harness(mode_pki)
    weak = HeContext.generate(
        HeParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 20, 40), scale_bits=20)
    )
    good = asyncio.run(mode.params(h.ctx()))
    public = mode._context.public_bytes()
    secret = mode._context
    with_secret = public.split(b"\n", 2)
    with_secret = (
        with_secret[0]
        + b"\n"
        + with_secret[1]
        + b"\n"
        + secret._context.serialize(save_secret_key=True)
    )
    bfv = HeContext.generate(HeParams(scheme="bfv", max_additions=16, value_bound=1024.0))
    cases = [
        (_params(h, weak.public_bytes()), "below 128-bit security"),
        (_params(h, _with_header(public, poly_modulus_degree=16384)), "does not match"),
        (_params(h, _with_header(public, max_additions=2)), "2 additions, 3 needed"),
        (_params(h, with_secret), "malformed CKKS public context"),
        (_params(h, bfv.public_bytes()), "not a CKKS context"),
        (_params(h, b"garbage"), "malformed CKKS public context"),
        (b"\xff", "malformed CKKS parameters"),
        (
            protocol_pb2.CkksParams(
                public_context=public,
                aggregator_certificate=h.pki.certs[B],
                participant_certificates=[h.pki.certs[B]],
            ).SerializeToString(),
            "at least 2 participants",
        ),
    ]
    both = protocol_pb2.CkksParams.FromString(good)
    both.public_context = public
    neither = protocol_pb2.CkksParams.FromString(good)
    neither.ClearField("public_context_digest")
    cases += [
        (both.SerializeToString(), "inline or by its digest, not both"),
        (neither.SerializeToString(), "name it by its SHA-256"),
    ]
    for params, match in cases:
        with pytest.raises(ValueError, match=match):
            CkksMode.protect(h.env(B), params, [ONE, 1])
    # Named by digest: only a context this requester's job holds (or cached) is used.
    with pytest.raises(ValueError, match="no longer held"):
        CkksMode.protect(dataclasses.replace(h.env(B), requester="mallory"), good, [ONE, 1])
    bare = h.env(B)
    no_comps = type(bare)(
        bare.node, bare.job_id, bare.signing_key, bare.ca_pem, binding=bare.binding
    )
    with pytest.raises(ValueError, match="component of every value"):
        CkksMode.protect(no_comps, _params(h, public), [ONE, 1])


def _bundle(run) -> protocol_pb2.SealedBundle:
    out = protocol_pb2.SealedBundle()
    for a in run.answers:
        out.items.extend(protocol_pb2.SealedBundle.FromString(a.payload).items)
    return out


def test_aggregator_refuses_malformed_and_out_of_range_ciphertexts(mode_pki, mode):
    h = Harness(mode_pki)
    run = h.protect(mode, values([ONE, 1], [2 * ONE, 1], [3 * ONE, 1]))
    good = _bundle(run)
    agg = peers(h.env(A), [h.pki.certs[A]], "aggregator")[0]
    sender = {C: peers(h.env(A), [h.pki.certs[C]], "participant")[0]}
    vec = protocol_pb2.CkksVector.FromString(
        open_sealed(h.env(A), "ckks", sender, good.items[2])[1]
    )
    chunk = bytearray(vec.chunks[0])
    # Invert 16 bytes of the (incompressible, so stored raw) coefficient data: that
    # covers a whole 64-bit word, which then exceeds every coefficient modulus.
    for i in range(len(chunk) // 2, len(chunk) // 2 + 16):
        chunk[i] ^= 0xFF

    def from_c(body: protocol_pb2.CkksVector | bytes) -> protocol_pb2.SealedBundle:
        raw = body if isinstance(body, bytes) else body.SerializeToString()
        return protocol_pb2.SealedBundle(items=[*good.items[:2], seal(h.env(C), "ckks", agg, raw)])

    ciphertext = "malformed or out-of-range ciphertext"
    bad = {
        "garbage chunk": (
            from_c(protocol_pb2.CkksVector(length=vec.length, chunks=[b"garbage" * 9])),
            ciphertext,
        ),
        "out of range": (
            from_c(protocol_pb2.CkksVector(length=vec.length, chunks=[bytes(chunk)])),
            ciphertext,
        ),
        "wrong length": (
            from_c(protocol_pb2.CkksVector(length=vec.length + 1, chunks=vec.chunks)),
            ciphertext,
        ),
        "two chunks": (
            from_c(protocol_pb2.CkksVector(length=vec.length, chunks=[*vec.chunks, *vec.chunks])),
            ciphertext,
        ),
        "not a vector": (from_c(b"\xff\xff"), ciphertext),
        "missing": (
            protocol_pb2.SealedBundle(items=good.items[:2]),
            "expected one ciphertext from each of 3",
        ),
        "repeated": (
            protocol_pb2.SealedBundle(items=[good.items[0], good.items[0], good.items[2]]),
            "missing or repeated",
        ),
    }
    state = run.session.states[A]
    for name, (bundle, match) in bad.items():
        with pytest.raises(ValueError, match=match):
            CkksMode.step(h.env(A), state, 1, bundle.SerializeToString())
        assert not state.done, name
    with pytest.raises(ValueError, match="malformed ciphertext bundle"):
        CkksMode.step(h.env(A), state, 1, b"\xff\xff")
    h.finish(mode, run, 1)
    assert run.combined.values[1] == 3
    with pytest.raises(ValueError, match="already aggregated"):
        CkksMode.step(h.env(A), state, 1, good.SerializeToString())


def test_aggregator_returning_garbage_is_refused(mode_pki, mode):
    h = Harness(mode_pki)
    vals = values([ONE, 1], [2 * ONE, 1], [3 * ONE, 1])
    public = HePublicContext.from_bytes(mode._context.public_bytes())

    def forged(node: str, r: int, reply: bytes) -> bytes:  # a valid ciphertext of wrong values
        msg = protocol_pb2.CkksVector.FromString(reply)
        fake = public.encrypt(np.full(msg.length, 1000.0))
        return protocol_pb2.CkksVector(
            length=msg.length, chunks=fake.to_chunks()
        ).SerializeToString()

    with pytest.raises(ProtocolError, match="checksum"):
        h.run(mode, vals, tamper_reply=forged)
    for tamper in (
        lambda n, r, b: b"\xff\xff",
        lambda n, r, b: protocol_pb2.CkksVector(length=3, chunks=[b"x"]).SerializeToString(),
    ):
        with pytest.raises(ProtocolError, match="malformed sum"):
            Harness(mode_pki).run(mode, vals, tamper_reply=tamper)


def test_constructor_checks():
    with pytest.raises(ValueError, match=r"value_bound must be in \(0, 2\^52\)"):
        CkksMode(value_bound=0)


def test_the_client_sends_its_context_once_per_node_and_again_when_asked():
    mode = CkksMode()
    asyncio.run(mode._keys())
    public = mode._context.public_bytes()
    assert mode.attachment(A) == public  # first query: sent
    mode.answered(A)
    assert mode.attachment(A) == b"" and mode.attachment(B) == public  # named by digest after
    assert mode.attachment(A, needed=True) == public  # a restarted node asks: resent
    mode.answered(A)
    assert mode.attachment(A) == b""
    assert mode.attachment(A, needed=True) == public  # asked twice: its cache has no room,
    mode.answered(A)
    assert mode.attachment(A) == public  # so it gets the context with every query
