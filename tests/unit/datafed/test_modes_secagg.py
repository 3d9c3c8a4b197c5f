"""``secagg`` mode in memory: totals, dropouts, what the analyst learns, bad input."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafed.errors import ProtocolError
from datafed.modes import SecAggMode
from datafed.modes._secagg import default_threshold
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
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(1, 5).flatmap(
        lambda g: st.lists(st.lists(INT, min_size=2 * g, max_size=2 * g), min_size=3, max_size=3)
    )
)
def test_totals_equal_plain(mode_pki, vecs):
    vals = values(*vecs)
    run = Harness(mode_pki).run(SecAggMode(), vals)
    assert run.combined.values == plain_total(vals)
    assert run.combined.nodes == NODES
    assert [r.round for r in run.session.log] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


@pytest.mark.parametrize(("dropped", "at_round"), [(C, 2), (A, 2), (B, 3), (B, 4)])
def test_total_survives_a_dropout(mode_pki, dropped, at_round):
    """A node lost before its masked input leaves the survivors' total; one lost while
    signing the survivor set or unmasking still counts (its masked input arrived)."""
    vals = values([10, 1, 20, 2], [100, 1, 200, 2], [1000, 1, 2000, 2])
    run = Harness(mode_pki).run(SecAggMode(), vals, drop_at={dropped: at_round})
    survivors = [n for n in NODES if n != dropped] if at_round == 2 else list(NODES)
    assert run.combined.values == plain_total(vals, survivors)
    assert run.combined.nodes == tuple(survivors)


@pytest.mark.parametrize("dropped", [A, C])
def test_a_required_node_that_drops_out_stops_the_unmask(mode_pki, dropped):
    """Issue 17: with every node required (an exact dataset's consortium), the survivors
    refuse to sign the survivor set, so no total of the others is ever unmasked."""
    h = Harness(mode_pki)
    h.required = NODES
    with pytest.raises(Exception, match="did not survive") as info:
        h.run(SecAggMode(), values([1, 1], [2, 1], [3, 1]), drop_at={dropped: 2})
    assert dropped in str(info.value)


def test_too_many_dropouts_abort(mode_pki):
    with pytest.raises(ProtocolError, match="need 2"):
        Harness(mode_pki).run(SecAggMode(), values([1, 1], [2, 1], [3, 1]), drop_at={A: 2, B: 2})


@pytest.mark.parametrize("value", [0, 10**6])
def test_analyst_sees_uniform_masked_inputs(mode_pki, value):
    """The analyst's view of one node's masked input is uniform whatever the node's value."""
    firsts = []
    for i in range(120):
        h = Harness(mode_pki, job_id=f"job-{i}")
        run = h.run(SecAggMode(), values([value, 1], [5, 1], [7, 1]))
        (masked,) = [r.reply for r in run.session.log if r.round == 2 and r.node == A]
        firsts.append(
            int.from_bytes(protocol_pb2.SecAggMasked.FromString(masked).masked[:8], "little")
        )
        assert run.combined.values == [value + 12, 3]
    assert chi_square_nibbles(firsts) < CHI2_15_P1E6
    assert chi_square_nibbles([value] * 120) > CHI2_15_P1E6  # the test can fail


def _tampered_roster(node: str, round_: int, payload: bytes) -> bytes:
    if round_ != 1 or node != A:
        return payload
    roster = protocol_pb2.SecAggRoster.FromString(payload)
    roster.keys[1].c_public = bytes(32 - 1) + b"\x09"  # the analyst substitutes B's key
    return roster.SerializeToString()


def test_analyst_cannot_substitute_advertised_keys(mode_pki):
    with pytest.raises(ValueError, match="not signed by its node"):
        Harness(mode_pki).run(
            SecAggMode(), values([1, 1], [2, 1], [3, 1]), tamper_request=_tampered_roster
        )


def test_rounds_in_order_and_a_failed_round_is_final(mode_pki):
    h = Harness(mode_pki)
    run = h.protect(SecAggMode(), values([1, 1], [2, 1], [3, 1]))
    state = run.session.states[A]
    with pytest.raises(ValueError, match="expects round 1, got 2"):
        SecAggMode.step(h.env(A), state, 2, b"")
    with pytest.raises(ValueError, match="malformed secagg round 1"):
        SecAggMode.step(h.env(A), state, 1, b"\xff\xff")
    with pytest.raises(ValueError, match="expects round 0"):  # no second chance
        SecAggMode.step(h.env(A), state, 1, b"")
    with pytest.raises(ValueError, match="no secagg state"):
        SecAggMode.step(h.env(A), None, 1, b"")


@pytest.mark.parametrize(
    ("round_", "reply", "match"),
    [
        (1, b"\xff\xff", "invalid secagg round 1 reply"),
        (
            2,
            protocol_pb2.SecAggMasked(client_id=1, masked=b"short").SerializeToString(),
            "invalid secagg round 2 reply",
        ),
        (
            2,
            protocol_pb2.SecAggMasked(client_id=2, masked=bytes(24)).SerializeToString(),
            "invalid secagg round 2 reply",
        ),
        (
            3,
            protocol_pb2.SecAggConsistency(client_id=2).SerializeToString(),
            "invalid secagg round 3 reply",
        ),
        (
            4,
            protocol_pb2.SecAggUnmask(client_id=1).SerializeToString(),
            "invalid secagg round 4 reply",
        ),
    ],
)
def test_garbage_from_a_node_is_refused(mode_pki, round_, reply, match):
    def tamper(node: str, r: int, payload: bytes) -> bytes:
        return reply if (node, r) == (A, round_) else payload

    with pytest.raises(ProtocolError, match=match):
        Harness(mode_pki).run(SecAggMode(), values([1, 1], [2, 1], [3, 1]), tamper_reply=tamper)


def _two_stories(node: str, round_: int, payload: bytes) -> bytes:
    """A hostile analyst: C is told that B dropped, A and B that everyone survived."""
    if round_ == 3 and node == C:
        return protocol_pb2.SecAggSurvivors(clients=[1, 3]).SerializeToString()
    if round_ != 4:
        return payload
    request = protocol_pb2.SecAggUnmaskRequest.FromString(payload)
    signatures = {s.client_id: s for s in request.signatures}
    if node == C:  # C unmasks for {A, C}: it would reveal B's mask-key share
        return protocol_pb2.SecAggUnmaskRequest(
            clients=[1, 3], signatures=[signatures[3]]
        ).SerializeToString()
    return protocol_pb2.SecAggUnmaskRequest(  # A and B reveal B's self-mask shares
        clients=[1, 2, 3], signatures=[signatures[1], signatures[2]]
    ).SerializeToString()


def test_an_analyst_telling_two_survivor_stories_cannot_unmask_one_node(mode_pki):
    """Bonawitz's consistency check: C signed only {A, C}; A's signature is on the full
    set, so C finds one signer where t = 2 are needed and reveals nothing."""
    with pytest.raises(ValueError, match="only 1 clients vouched for U3, need 2"):
        Harness(mode_pki).run(
            SecAggMode(), values([1, 1], [2, 1], [3, 1]), tamper_request=_two_stories
        )


def test_forged_or_mixed_survivor_signatures_are_refused(mode_pki):
    def tamper(node: str, round_: int, payload: bytes) -> bytes:
        if round_ != 4:
            return payload
        request = protocol_pb2.SecAggUnmaskRequest.FromString(payload)
        request.signatures[1].signature = request.signatures[0].signature  # A's, as B's
        return request.SerializeToString()

    with pytest.raises(ValueError, match="signature does not verify"):
        Harness(mode_pki).run(SecAggMode(), values([1, 1], [2, 1], [3, 1]), tamper_request=tamper)


def test_garbage_masked_input_of_right_shape_fails_the_checksum(mode_pki):
    def tamper(node: str, r: int, payload: bytes) -> bytes:
        if (node, r) != (B, 2):
            return payload
        msg = protocol_pb2.SecAggMasked.FromString(payload)
        msg.masked = bytes([msg.masked[0] ^ 1]) + msg.masked[1:]
        return msg.SerializeToString()

    with pytest.raises(ProtocolError, match="checksum"):
        Harness(mode_pki).run(SecAggMode(), values([1, 1], [2, 1], [3, 1]), tamper_reply=tamper)


def test_bad_parameters(mode_pki):
    h = Harness(mode_pki)
    certs = [h.pki.certs[n] for n in NODES]
    cases = [
        (
            protocol_pb2.SecAggParams(participant_certificates=certs, threshold=1),
            "2 <= t <= n < 2t",
        ),
        (
            protocol_pb2.SecAggParams(participant_certificates=certs, threshold=4),
            "2 <= t <= n < 2t",
        ),
        (
            protocol_pb2.SecAggParams(
                participant_certificates=[*certs, h.pki.certs["water-west"]], threshold=2
            ),
            "do not match the statement's roster",  # a fourth node the statement does not name
        ),
        (protocol_pb2.SecAggParams(participant_certificates=certs[1:], threshold=2), "not among"),
        (
            protocol_pb2.SecAggParams(
                participant_certificates=[certs[0], h.pki.other_ca_certs[B], certs[2]], threshold=2
            ),
            "refused",
        ),
    ]
    for msg, match in cases:
        with pytest.raises(ValueError, match=match):
            SecAggMode.protect(h.env(A), msg.SerializeToString(), [1, 1])
    with pytest.raises(ValueError, match="malformed"):
        SecAggMode.protect(h.env(A), b"\xff", [1, 1])
    env = h.env(A)
    no_stash = type(env)(env.node, env.job_id, env.signing_key, env.ca_pem, binding=env.binding)
    good = asyncio.run(SecAggMode().params(h.ctx()))
    with pytest.raises(ValueError, match="cannot keep"):
        SecAggMode.protect(no_stash, good, [1, 1])
    assert [default_threshold(n) for n in (2, 3, 4, 5)] == [2, 2, 3, 3]
    with pytest.raises(ProtocolError, match="2 <= t <= n < 2t"):
        asyncio.run(SecAggMode(threshold=4).params(h.ctx()))
