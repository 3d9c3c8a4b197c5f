"""Prio3 end to end: correctness (hypothesis), and the client's and aggregators' bad inputs.

Attack tests (``test_attack_*``) play a malicious client that crafts reports, or a
network that flips bytes, and check that the report is rejected with the one
detail-free ReportRejected, before any output share is released.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafed.hazmat import Field64, SumVecCircuit
from datafed.protocols import (
    HelperShare,
    LeaderShare,
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
    ReportRejected,
)

from .prio3_helpers import CTX, new_report, run, verify

SETTINGS = settings(max_examples=12, deadline=None)


@SETTINGS
@given(st.lists(st.integers(0, 1), max_size=12), st.sampled_from([2, 3]))
def test_count_returns_the_sum(ms: list[int], shares: int) -> None:
    assert run(Prio3Count(shares), ms) == sum(ms)


@SETTINGS
@given(st.integers(1, 2**20), st.data())
def test_sum_returns_the_sum(max_measurement: int, data: st.DataObject) -> None:
    ms = data.draw(st.lists(st.integers(0, max_measurement), max_size=6))
    assert run(Prio3Sum(max_measurement), ms) == sum(ms)


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 300), st.data())
def test_sumvec_returns_the_sum(length: int, max_measurement: int, data: st.DataObject) -> None:
    ms = data.draw(
        st.lists(
            st.lists(st.integers(0, max_measurement), min_size=length, max_size=length), max_size=4
        )
    )
    expected = [sum(col) for col in zip(*ms, strict=True)] if ms else [0] * length
    assert run(Prio3SumVec(length, max_measurement), ms) == expected


@SETTINGS
@given(st.integers(1, 20), st.data())
def test_histogram_returns_the_counts(length: int, data: st.DataObject) -> None:
    ms = data.draw(st.lists(st.integers(0, length - 1), max_size=5))
    assert run(Prio3Histogram(length), ms) == [ms.count(i) for i in range(length)]


@SETTINGS
@given(st.integers(1, 12), st.data())
def test_multihot_returns_the_counts(length: int, data: st.DataObject) -> None:
    max_weight = data.draw(st.integers(1, length))
    vec = st.lists(st.booleans(), min_size=length, max_size=length).filter(
        lambda v: sum(v) <= max_weight
    )
    ms = data.draw(st.lists(vec, max_size=4))
    expected = [sum(m[i] for m in ms) for i in range(length)]
    assert run(Prio3MultihotCountVec(length, max_weight), ms) == expected


def test_registered_ids_and_sizes() -> None:
    # §10 codepoints; sizes of §7.2 with XofTurboShake128 (32-byte seeds).
    vdafs = [
        Prio3Count(),
        Prio3Sum(255),
        Prio3SumVec(4, 3),
        Prio3Histogram(4),
        Prio3MultihotCountVec(4, 2),
    ]
    assert [v.ID for v in vdafs] == [1, 2, 3, 4, 5]
    assert [v.RAND_SIZE for v in vdafs] == [64, 64, 128, 128, 128]
    assert all(v.VERIFY_KEY_SIZE == 32 and v.NONCE_SIZE == 16 for v in vdafs)


# -- bad input from the caller ------------------------------------------------------


def test_caller_errors_are_value_errors() -> None:
    v = Prio3Count()
    with pytest.raises(ValueError):
        v.shard(CTX, 2, bytes(16), bytes(64))  # invalid measurement
    with pytest.raises(ValueError):
        v.shard(CTX, 1, bytes(15), bytes(64))
    with pytest.raises(ValueError):
        v.shard(CTX, 1, bytes(16), bytes(63))
    nonce, public, shares = new_report(v, 1)
    with pytest.raises(ValueError):
        v.verify_init(bytes(16), CTX, 0, nonce, public, shares[0])  # verify key size
    with pytest.raises(ValueError):
        v.verify_init(bytes(32), CTX, 2, nonce, public, shares[0])  # agg id
    with pytest.raises(ValueError):
        v.unshard([[0]], 1)
    for bad in ({"shares": 1}, {"shares": 256}):
        with pytest.raises(ValueError):
            Prio3Count(**bad)
    with pytest.raises(ValueError):
        Prio3(Prio3Count().flp.valid, shares=2, vdaf_id=0, proofs=0)
    # §9.7: weak parameters are refused (joint randomness over Field64 needs 3 proofs).
    weak = SumVecCircuit(Field64, 4, 3, 2)
    with pytest.raises(ValueError):
        Prio3(weak, shares=2, vdaf_id=0xFFFFFFFF, proofs=2)
    assert run(Prio3(weak, shares=2, vdaf_id=0xFFFFFFFF, proofs=3), [[3, 2, 1, 0]]) == [3, 2, 1, 0]


# -- attacks ------------------------------------------------------------------------

VDAFS: list[tuple[str, Prio3[Any, Any], Any]] = [
    ("count", Prio3Count(), 1),
    ("sum", Prio3Sum(255), 200),
    ("histogram", Prio3Histogram(10), 3),
    ("sumvec", Prio3SumVec(3, 7), [1, 7, 0]),
    ("multihot", Prio3MultihotCountVec(5, 2), [True, False, False, True, False]),
]
IDS = [v[0] for v in VDAFS]
KEY = os.urandom(32)


def wire(vdaf: Prio3[Any, Any], measurement: Any) -> tuple[bytes, bytes, list[bytes]]:
    nonce, public, shares = new_report(vdaf, measurement)
    return nonce, vdaf.encode_public_share(public), [vdaf.encode_input_share(s) for s in shares]


def verify_wire(
    vdaf: Prio3[Any, Any], nonce: bytes, public: bytes, shares: list[bytes]
) -> list[list[int]]:
    decoded_public = vdaf.decode_public_share(public)
    decoded = [vdaf.decode_input_share(j, s) for j, s in enumerate(shares)]
    return verify(vdaf, [KEY, KEY], nonce, decoded_public, decoded)


def flip(data: bytes, index: int, bit: int = 1) -> bytes:
    out = bytearray(data)
    out[index] ^= bit
    return bytes(out)


@pytest.mark.parametrize(("name", "vdaf", "m"), VDAFS, ids=IDS)
def test_attack_flipped_byte_anywhere_in_the_report_is_rejected(
    name: str, vdaf: Prio3[Any, Any], m: Any
) -> None:
    nonce, public, shares = wire(vdaf, m)
    assert verify_wire(vdaf, nonce, public, shares)  # the untouched report passes
    # Every byte of each input share and of the public share, one at a time.
    targets = [("leader", i) for i in range(len(shares[0]))] + [
        ("helper", i) for i in range(len(shares[1]))
    ]
    targets += [("public", i) for i in range(len(public))]
    for where, i in targets:
        s = list(shares)
        p = public
        if where == "leader":
            s[0] = flip(s[0], i)
        elif where == "helper":
            s[1] = flip(s[1], i)
        else:
            p = flip(p, i)
        with pytest.raises(ReportRejected):
            verify_wire(vdaf, nonce, p, s)


@pytest.mark.parametrize(("name", "vdaf", "m"), VDAFS, ids=IDS)
def test_attack_wrong_lengths_are_rejected_at_decoding(
    name: str, vdaf: Prio3[Any, Any], m: Any
) -> None:
    nonce, public, shares = wire(vdaf, m)
    for j, s in enumerate(shares):
        for bad in (s[:-1], s + b"\x00", b""):
            with pytest.raises(ReportRejected):
                vdaf.decode_input_share(j, bad)
    with pytest.raises(ReportRejected):
        vdaf.decode_public_share(public + b"\x00")
    _, vshare = vdaf.verify_init(
        KEY, CTX, 0, nonce, vdaf.decode_public_share(public), vdaf.decode_input_share(0, shares[0])
    )
    encoded = vdaf.encode_verifier_share(vshare)
    assert vdaf.encode_verifier_share(vdaf.decode_verifier_share(encoded)) == encoded
    for bad in (encoded[:-1], encoded + b"\x00"):
        with pytest.raises(ReportRejected):
            vdaf.decode_verifier_share(bad)
    with pytest.raises(ReportRejected):
        vdaf.decode_verifier_message(b"\x00" * 31 if vdaf.uses_joint_rand else b"\x00")
    with pytest.raises(ReportRejected):
        vdaf.decode_agg_share(b"\x00")


@pytest.mark.parametrize(("name", "vdaf", "m"), VDAFS, ids=IDS)
def test_attack_element_above_the_modulus_is_rejected(
    name: str, vdaf: Prio3[Any, Any], m: Any
) -> None:
    nonce, public, shares = wire(vdaf, m)
    size = vdaf.field.ENCODED_SIZE
    bad = vdaf.field.MODULUS.to_bytes(size, "little") + shares[0][size:]
    with pytest.raises(ReportRejected):
        verify_wire(vdaf, nonce, public, [bad, shares[1]])


@pytest.mark.parametrize(("name", "vdaf", "m"), VDAFS, ids=IDS)
def test_attack_aggregators_disagree_on_key_or_context(
    name: str, vdaf: Prio3[Any, Any], m: Any
) -> None:
    nonce, public, shares = new_report(vdaf, m)
    assert verify(vdaf, [KEY, KEY], nonce, public, shares)
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, os.urandom(32)], nonce, public, shares)
    # The client sharded under CTX; aggregators verifying under another context reject.
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], nonce, public, shares, ctxs=[b"other", b"other"])
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], nonce, public, shares, ctxs=[CTX, b"other"])


@pytest.mark.parametrize(
    ("name", "vdaf", "m"),
    [v for v in VDAFS if v[1].uses_joint_rand],
    ids=[v[0] for v in VDAFS if v[1].uses_joint_rand],
)
def test_attack_nonce_and_message_are_bound_to_the_report(
    name: str, vdaf: Prio3[Any, Any], m: Any
) -> None:
    nonce, public, shares = new_report(vdaf, m)
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], os.urandom(16), public, shares)
    # A verifier message (joint-randomness seed) from another report does not release this one.
    other_nonce, other_public, other_shares = new_report(vdaf, m)
    vshares = [
        vdaf.verify_init(KEY, CTX, j, other_nonce, other_public, s)[1]
        for j, s in enumerate(other_shares)
    ]
    other_message = vdaf.verifier_shares_to_message(CTX, vshares)
    state, _ = vdaf.verify_init(KEY, CTX, 0, nonce, public, shares[0])
    with pytest.raises(ReportRejected):
        vdaf.verify_next(CTX, state, other_message)
    with pytest.raises(ReportRejected):
        vdaf.verify_next(CTX, state, None)


def test_attack_swapped_or_mistyped_shares_are_rejected() -> None:
    vdaf = Prio3Histogram(6)
    nonce, public, shares = new_report(vdaf, 2)
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], nonce, public, [shares[1], shares[0]])
    assert isinstance(shares[0], LeaderShare) and isinstance(shares[1], HelperShare)
    no_blind = HelperShare(shares[1].seed, None)
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], nonce, public, [shares[0], no_blind])
    with pytest.raises(ReportRejected):
        verify(vdaf, [KEY, KEY], nonce, None, shares)
    with pytest.raises(ReportRejected):  # a Count report offered to a Histogram task
        count = Prio3Count()
        n2, p2, s2 = new_report(count, 1)
        verify(vdaf, [KEY, KEY], n2, p2, s2)


def test_attack_rejections_carry_no_detail() -> None:
    # Different causes, one message: rejections cannot be used as an oracle.
    vdaf = Prio3SumVec(2, 3)
    nonce, public, shares = wire(vdaf, [1, 2])
    messages = set()
    for attempt in (
        lambda: verify_wire(vdaf, nonce, public, [flip(shares[0], 0), shares[1]]),
        lambda: verify_wire(vdaf, nonce, flip(public, 0), shares),
        lambda: vdaf.decode_input_share(0, shares[0][:-1]),
        lambda: verify(
            vdaf,
            [KEY, os.urandom(32)],
            nonce,
            vdaf.decode_public_share(public),
            [vdaf.decode_input_share(j, s) for j, s in enumerate(shares)],
        ),
    ):
        with pytest.raises(ReportRejected) as info:
            attempt()
        messages.add(str(info.value))
    assert messages == {"invalid protocol message"}


def test_secrets_are_redacted_in_reprs() -> None:
    vdaf = Prio3Sum(1000)
    nonce, public, shares = new_report(vdaf, 999)
    state, _ = vdaf.verify_init(KEY, CTX, 0, nonce, public, shares[0])
    for obj in (shares[0], shares[1], state):
        text = repr(obj)
        assert "redacted" in text
        assert str(state.out_share[0]) not in text
    assert shares[1].seed.hex() not in repr(shares[1])
