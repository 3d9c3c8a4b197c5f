"""Ping-pong verification of Prio3 between two aggregators (draft-irtf-cfrg-vdaf-20 §5.7.1)."""

from __future__ import annotations

import os

import pytest

from datafed.protocols import Prio3Count, Prio3SumVec, ReportRejected
from datafed.protocols._pingpong import (
    CONTINUE,
    FINISH,
    INITIALIZE,
    Continued,
    Finished,
    FinishedWithOutbound,
    Rejected,
    decode_message,
    encode_message,
    helper_init,
    leader_continued,
    leader_init,
)

CTX = b"ctx"
KEY = os.urandom(32)


def report(vdaf, m):  # type: ignore[no-untyped-def]
    nonce = os.urandom(16)
    public, shares = vdaf.shard(CTX, m, nonce, os.urandom(vdaf.RAND_SIZE))
    return nonce, vdaf.encode_public_share(public), [vdaf.encode_input_share(s) for s in shares]


def test_message_encoding_round_trips_and_rejects_malformed() -> None:
    for kind, fields in (
        (INITIALIZE, [b"abc"]),
        (CONTINUE, [b"", b"xy"]),
        (FINISH, [b"\x00" * 40]),
    ):
        data = encode_message(kind, *fields)
        assert decode_message(data) == (kind, fields)
        for bad in (
            data[:-1] if fields[-1] else data + b"\x00",
            data + b"\x00",
            b"\x03" + data[1:],
        ):
            with pytest.raises(ReportRejected):
                decode_message(bad)
    assert encode_message(FINISH, b"ab") == b"\x02\x00\x00\x00\x02ab"
    with pytest.raises(ReportRejected):
        decode_message(b"")
    with pytest.raises(ValueError):
        encode_message(CONTINUE, b"only one")


@pytest.mark.parametrize(("vdaf", "m"), [(Prio3Count(), 1), (Prio3SumVec(3, 5), [5, 0, 2])])
def test_one_round_trip_gives_both_output_shares(vdaf, m) -> None:  # type: ignore[no-untyped-def]
    nonce, public, shares = report(vdaf, m)
    lead = leader_init(vdaf, KEY, CTX, nonce, public, shares[0])
    assert isinstance(lead, Continued)
    helper = helper_init(vdaf, KEY, CTX, nonce, public, shares[1], lead.outbound)
    assert isinstance(helper, FinishedWithOutbound)
    done = leader_continued(vdaf, CTX, lead, helper.outbound)
    assert isinstance(done, Finished)
    total = vdaf.unshard([done.out_share, helper.out_share], 1)
    assert total == m
    assert "redacted" in repr(done) and "redacted" in repr(helper)


def test_attack_out_of_order_or_tampered_messages_reject() -> None:
    vdaf = Prio3Count()
    nonce, public, shares = report(vdaf, 1)
    lead = leader_init(vdaf, KEY, CTX, nonce, public, shares[0])
    assert isinstance(lead, Continued)
    helper = helper_init(vdaf, KEY, CTX, nonce, public, shares[1], lead.outbound)
    assert isinstance(helper, FinishedWithOutbound)
    # The Helper must get "initialize" first; the Leader must get "finish".
    assert helper_init(vdaf, KEY, CTX, nonce, public, shares[1], helper.outbound) == Rejected()
    assert leader_continued(vdaf, CTX, lead, lead.outbound) == Rejected()
    # A tampered Leader verifier share makes the Helper reject.
    tampered = bytearray(lead.outbound)
    tampered[6] ^= 1
    assert helper_init(vdaf, KEY, CTX, nonce, public, shares[1], bytes(tampered)) == Rejected()
    assert leader_init(vdaf, KEY, CTX, nonce, public, shares[0][:-1]) == Rejected()
    assert helper_init(vdaf, KEY, CTX, nonce, public, shares[1][:-1], lead.outbound) == Rejected()
    # A finish carrying a verifier message for a joint-randomness-free VDAF must be empty.
    assert leader_continued(vdaf, CTX, lead, encode_message(FINISH, b"\x00" * 32)) == Rejected()
