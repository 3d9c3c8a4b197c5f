"""``shares`` mode in memory: totals, what each party learns, every bad input."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafed.errors import ProtocolError
from datafed.modes import SharesMode
from datafed.modes._envelope import open_sealed, peers, seal
from datafed.modes.errors import InvalidEnvelope
from datafed.proto.v1 import protocol_pb2
from tests.unit.datafed.mode_harness import (
    CHI2_15_P1E6,
    NODES,
    Harness,
    chi_square_nibbles,
    plain_total,
)
from tests.unit.datafed.mode_harness import mode_pki as _mode_pki

mode_pki = _mode_pki  # the fixture

A, B, C = NODES
INT = st.integers(min_value=-(1 << 40), max_value=1 << 40)


def values(a: list[int], b: list[int], c: list[int]) -> dict[str, list[int]]:
    return {A: a, B: b, C: c}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(1, 6).flatmap(
        lambda g: st.lists(st.lists(INT, min_size=2 * g, max_size=2 * g), min_size=3, max_size=3)
    )
)
def test_totals_equal_plain(mode_pki, vecs):
    vals = values(*vecs)
    run = Harness(mode_pki).run(SharesMode(), vals)
    assert run.combined.values == plain_total(vals)
    assert run.combined.nodes == NODES and run.combined.error_bound is None


def test_three_aggregators(mode_pki):
    vals = values([5, 1, -7, 2], [0, 3, 9, 1], [1 << 50, 2, 0, 0])
    run = Harness(mode_pki).run(SharesMode(aggregators=3), vals)
    assert run.combined.values == plain_total(vals)
    assert sorted({r.node for r in run.session.log}) == sorted(NODES)


def _aggregator_views(h: Harness, run) -> dict[str, list[protocol_pb2.ShareBody]]:
    """Open each aggregator's bundle with its own key: exactly what it learns."""
    ids = {i.name: i for i in peers(h.env(A), [h.pki.certs[n] for n in NODES], "participant")}
    out = {}
    for r in run.session.log:
        bundle = protocol_pb2.SealedBundle.FromString(r.request)
        bodies = [open_sealed(h.env(r.node), "shares", ids, it)[1] for it in bundle.items]
        out[r.node] = [protocol_pb2.ShareBody.FromString(b) for b in bodies]
    return out


def test_views_same_whatever_one_nodes_value_given_same_total(mode_pki, monkeypatch):
    """With the same randomness, A=0/B=10^6 and A=10^6/B=0 look identical to the analyst
    (both aggregators' sums) and to the seed aggregator (its shares)."""
    runs = []
    for a, b in ((0, 10**6), (10**6, 0)):
        seeds = iter([bytes([i]) * 16 for i in range(1, 100)])
        monkeypatch.setattr(secrets, "token_bytes", lambda n, s=seeds: next(s))
        h = Harness(mode_pki)
        runs.append((h, h.run(SharesMode(), values([a, 1], [b, 1], [7, 1]))))
        monkeypatch.undo()
    (h1, r1), (h2, r2) = runs
    assert r1.combined.values == r2.combined.values == [10**6 + 7, 3]
    # The analyst: both aggregators' share sums are byte for byte the same.
    assert [x.reply for x in r1.session.log] == [x.reply for x in r2.session.log]
    # The sealed envelopes it relays differ (fresh ephemeral keys) and do not open for it.
    assert r1.session.log[0].request != r2.session.log[0].request
    # The seed aggregator (first): the same seeds in both worlds.
    v1, v2 = _aggregator_views(h1, r1), _aggregator_views(h2, r2)
    assert [b.SerializeToString() for b in v1[A]] == [b.SerializeToString() for b in v2[A]]
    assert all(b.WhichOneof("share") == "seed" for b in v1[A])
    assert all(b.WhichOneof("share") == "vector" for b in v1[B])


@pytest.mark.parametrize("value", [0, 10**6])
def test_vector_aggregator_sees_uniform_shares(mode_pki, value):
    """The aggregator holding explicit vectors sees x - PRG(seed): uniform, for any x."""
    h = Harness(mode_pki)
    params = asyncio.run(SharesMode().params(h.ctx()))
    ids = {i.name: i for i in peers(h.env(A), [h.pki.certs[C]], "participant")}
    firsts = []
    for _ in range(400):
        bundle = protocol_pb2.SealedBundle.FromString(
            SharesMode.protect(h.env(C), params, [value, 1])
        )
        item = next(i for i in bundle.items if i.recipient == B)
        body = protocol_pb2.ShareBody.FromString(open_sealed(h.env(B), "shares", ids, item)[1])
        firsts.append(int.from_bytes(body.vector[:8], "little"))
    assert chi_square_nibbles(firsts) < CHI2_15_P1E6
    # The test can fail: the cleartext value itself is far from uniform.
    assert chi_square_nibbles([value] * 400) > CHI2_15_P1E6


def test_analyst_cannot_open_or_forge_envelopes(mode_pki):
    h = Harness(mode_pki)
    run = h.protect(SharesMode(), values([1, 1], [2, 1], [3, 1]))
    ids = {i.name: i for i in peers(h.env(A), [h.pki.certs[n] for n in NODES], "participant")}
    item = protocol_pb2.SealedBundle.FromString(run.answers[0].payload).items[1]  # to B
    with pytest.raises(InvalidEnvelope):
        open_sealed(h.env(A), "shares", ids, item)  # not the recipient
    with pytest.raises(InvalidEnvelope):
        open_sealed(h.env(B, job_id="job-other"), "shares", ids, item)  # another job
    with pytest.raises(InvalidEnvelope):
        open_sealed(h.env(B), "ckks", ids, item)  # another mode
    with pytest.raises(InvalidEnvelope):
        open_sealed(h.env(B), "shares", {C: ids[C]}, item)  # sender not a participant
    flipped = protocol_pb2.SealedEnvelope(
        recipient=B, sealed=bytes([item.sealed[0] ^ 1]) + item.sealed[1:]
    )
    with pytest.raises(InvalidEnvelope):
        open_sealed(h.env(B), "shares", ids, flipped)
    assert open_sealed(h.env(B), "shares", ids, item)[0] == A


def _bundle_for(run, node: str) -> protocol_pb2.SealedBundle:
    out = protocol_pb2.SealedBundle()
    for a in run.answers:
        out.items.extend(
            i for i in protocol_pb2.SealedBundle.FromString(a.payload).items if i.recipient == node
        )
    return out


def _bad_bundles(h: Harness, run) -> dict[str, bytes]:
    good = _bundle_for(run, A)
    missing = protocol_pb2.SealedBundle(items=good.items[:2])
    twice = protocol_pb2.SealedBundle(items=[good.items[0], good.items[0], good.items[1]])
    to_b = _bundle_for(run, B)
    ids = {i.name: i for i in peers(h.env(A), [h.pki.certs[A]], "aggregator")}
    bad_len = protocol_pb2.SealedBundle(
        items=[
            *good.items[:2],
            seal(
                h.env(C),
                "shares",
                ids[A],
                protocol_pb2.ShareBody(index=0, length=99, seed=b"s" * 16).SerializeToString(),
            ),
        ]
    )
    bad_seed = protocol_pb2.SealedBundle(
        items=[
            *good.items[:2],
            seal(
                h.env(C),
                "shares",
                ids[A],
                protocol_pb2.ShareBody(index=0, length=3, seed=b"short").SerializeToString(),
            ),
        ]
    )
    garbage = protocol_pb2.SealedBundle(
        items=[*good.items[:2], seal(h.env(C), "shares", ids[A], b"\xff\x00garbage")]
    )
    return {
        "malformed": b"\x0a\xff",
        "missing": missing.SerializeToString(),
        "twice": twice.SerializeToString(),
        "for another aggregator": to_b.SerializeToString(),
        "wrong length": bad_len.SerializeToString(),
        "short seed": bad_seed.SerializeToString(),
        "garbage body": garbage.SerializeToString(),
    }


def test_aggregator_refuses_bad_bundles_then_still_aggregates(mode_pki):
    h = Harness(mode_pki)
    vals = values([1, 1], [2, 1], [3, 1])
    run = h.protect(SharesMode(), vals)
    replay_h = Harness(mode_pki, job_id="job-earlier")
    earlier = replay_h.protect(SharesMode(), vals)
    bad = _bad_bundles(h, run)
    bad["job replay"] = _bundle_for(earlier, A).SerializeToString()
    state = run.session.states[A]
    for name, payload in bad.items():
        with pytest.raises(ValueError):
            SharesMode.step(h.env(A), state, 1, payload)
        assert not state.done, name
    with pytest.raises(ValueError, match="not an aggregator"):
        SharesMode.step(
            h.env(C), run.session.states.get(C), 1, _bundle_for(run, A).SerializeToString()
        )
    with pytest.raises(ValueError):
        SharesMode.step(h.env(A), state, 2, _bundle_for(run, A).SerializeToString())
    h.finish(SharesMode(), run, 1)
    assert run.combined.values == [6, 3]
    with pytest.raises(ValueError, match="already aggregated"):  # once per job
        SharesMode.step(h.env(A), state, 1, _bundle_for(run, A).SerializeToString())


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (
            lambda n, r, b: protocol_pb2.ShareSum(
                vector=secrets.token_bytes(len(protocol_pb2.ShareSum.FromString(b).vector))
            ).SerializeToString(),
            "checksum",
        ),
        (lambda n, r, b: b[:-3], "malformed share sum"),
        (lambda n, r, b: b"\x0a\x02\x01\x02", "malformed share sum"),
        (
            lambda n, r, b: (
                protocol_pb2.ShareSum(
                    vector=bytes([protocol_pb2.ShareSum.FromString(b).vector[0] ^ 1])
                    + protocol_pb2.ShareSum.FromString(b).vector[1:]
                ).SerializeToString()
                if n == B
                else b
            ),
            "checksum",
        ),
    ],
)
def test_aggregator_returning_garbage_is_refused(mode_pki, tamper, match):
    with pytest.raises(ProtocolError, match=match):
        Harness(mode_pki).run(SharesMode(), values([1, 1], [2, 1], [3, 1]), tamper_reply=tamper)


def test_nodes_addressing_other_aggregators_are_refused(mode_pki):
    h = Harness(mode_pki)
    run = h.protect(SharesMode(), values([1, 1], [2, 1], [3, 1]))
    bundle = protocol_pb2.SealedBundle.FromString(run.answers[2].payload)
    bundle.items[1].recipient = C
    run.answers[2] = type(run.answers[2])(C, bundle.SerializeToString())
    with pytest.raises(ProtocolError, match="other aggregators"):
        h.finish(SharesMode(), run, 1)
    run.answers[2] = type(run.answers[2])(C, b"\xff\xff")
    with pytest.raises(ProtocolError, match="malformed payload"):
        h.finish(SharesMode(), run, 1)


def test_bad_parameters(mode_pki):
    h = Harness(mode_pki)
    good = protocol_pb2.SharesParams.FromString(asyncio.run(SharesMode().params(h.ctx())))

    def with_(**kw) -> bytes:
        msg = protocol_pb2.SharesParams()
        msg.CopyFrom(good)
        for k, v in kw.items():
            del getattr(msg, k)[:]
            getattr(msg, k).extend(v)
        return msg.SerializeToString()

    certs, other = h.pki.certs, h.pki.other_ca_certs
    cases = {
        with_(aggregator_certificates=[certs[A]]): "between 2 and 16 aggregators",
        with_(aggregator_certificates=[certs[A], other[B]]): "aggregator certificate refused",
        with_(aggregator_certificates=[certs[A], h.pki.analyst_cert]): "expected 'node'",
        with_(aggregator_certificates=[certs[A], certs[A]]): "listed twice",
        with_(aggregator_certificates=[certs[A], certs["water-west"]]): "must be a participant",
        with_(participant_certificates=[certs[A], certs[B]]): "not among the listed participants",
        b"\xff": "malformed shares parameters",
    }
    for params, match in cases.items():
        with pytest.raises(ValueError, match=match):
            SharesMode.protect(h.env(C), params, [1, 1])
    with pytest.raises(OverflowError):
        SharesMode.protect(h.env(C), with_(), [1 << 63, 1])
    with pytest.raises(ValueError, match="between 2 and 16 aggregators"):
        SharesMode(aggregators=1)
    few = Harness(mode_pki, nodes=(A,))
    with pytest.raises(ProtocolError, match="needs 2 aggregator nodes"):
        asyncio.run(SharesMode().params(few.ctx()))
