"""Two-aggregator "ping-pong" verification of Prio3 (draft-irtf-cfrg-vdaf-20 §5.7.1).

Leader and Helper run verification over a request/response transport with three
message types (TLS presentation language, 32-bit length prefixes)::

    initialize(0): opaque verifier_share<0..2^32-1>
    continue(1):   opaque verifier_message<0..2^32-1>; opaque verifier_share<0..2^32-1>
    finish(2):     opaque verifier_message<0..2^32-1>

Prio3 has one round (``ROUNDS = 1``), so the exchange is one round trip: the
Leader sends ``initialize`` with its verifier share; the Helper computes the
verifier message, finishes (its output share) and answers ``finish``; the Leader
finishes on that message.  The states are the draft's (Appendix B):
:class:`Continued`, :class:`FinishedWithOutbound`, :class:`Finished`,
:class:`Rejected`.  Any failure, including a malformed or unexpected message,
lands in :class:`Rejected` and names no cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_types import ReportRejected, Vec, VerifierShare, VerifyState

INITIALIZE, CONTINUE, FINISH = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Continued:
    """Waiting for the peer; ``outbound`` is the message to send it."""

    verify_state: VerifyState
    verify_round: int
    outbound: bytes


@dataclass(frozen=True, eq=False)
class FinishedWithOutbound:
    """Output share recovered; ``outbound`` must still reach the peer."""

    out_share: Vec
    outbound: bytes

    def __repr__(self) -> str:
        return f"FinishedWithOutbound(<{len(self.out_share)} elements redacted>)"


@dataclass(frozen=True, eq=False)
class Finished:
    """Output share recovered; nothing left to send."""

    out_share: Vec

    def __repr__(self) -> str:
        return f"Finished(<{len(self.out_share)} elements redacted>)"


@dataclass(frozen=True)
class Rejected:
    """The report is invalid and must not be aggregated (no cause given)."""


State = Continued | FinishedWithOutbound | Finished | Rejected


def encode_message(kind: int, *fields: bytes) -> bytes:
    """A ping-pong message: type byte, then each field with a 4-byte length (§5.7.1)."""
    expected = {INITIALIZE: 1, CONTINUE: 2, FINISH: 1}
    if expected.get(kind) != len(fields):
        raise ValueError("wrong number of fields for the message type")
    return bytes([kind]) + b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def decode_message(data: bytes) -> tuple[int, list[bytes]]:
    """Inverse of :func:`encode_message`; trailing bytes are an error."""
    if not data or data[0] not in (INITIALIZE, CONTINUE, FINISH):
        raise ReportRejected
    kind, count = data[0], 2 if data[0] == CONTINUE else 1
    fields, pos = [], 1
    for _ in range(count):
        if pos + 4 > len(data):
            raise ReportRejected
        length = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + length > len(data):
            raise ReportRejected
        fields.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise ReportRejected
    return kind, fields


def _verify_init(
    vdaf: Prio3[Any, Any],
    agg_id: int,
    verify_key: bytes,
    ctx: bytes,
    nonce: bytes,
    public_share: bytes,
    input_share: bytes,
) -> tuple[VerifyState, VerifierShare]:
    """Aggregator ``agg_id``'s verify_init on the encoded public share and input share."""
    return vdaf.verify_init(
        verify_key,
        ctx,
        agg_id,
        nonce,
        vdaf.decode_public_share(public_share),
        vdaf.decode_input_share(agg_id, input_share),
    )


def leader_init(
    vdaf: Prio3[Any, Any],
    verify_key: bytes,
    ctx: bytes,
    nonce: bytes,
    public_share: bytes,
    input_share: bytes,
) -> Continued | Rejected:
    """The Leader's first step: its verifier share in an ``initialize`` message."""
    try:
        state, share = _verify_init(vdaf, 0, verify_key, ctx, nonce, public_share, input_share)
    except ReportRejected:
        return Rejected()
    return Continued(state, 0, encode_message(INITIALIZE, vdaf.encode_verifier_share(share)))


def helper_init(
    vdaf: Prio3[Any, Any],
    verify_key: bytes,
    ctx: bytes,
    nonce: bytes,
    public_share: bytes,
    input_share: bytes,
    inbound: bytes,
) -> FinishedWithOutbound | Rejected:
    """The Helper's step on the Leader's ``initialize``: finish, answer ``finish``."""
    try:
        state, share = _verify_init(vdaf, 1, verify_key, ctx, nonce, public_share, input_share)
        kind, fields = decode_message(inbound)
        if kind != INITIALIZE:
            return Rejected()
        leader_share = vdaf.decode_verifier_share(fields[0])
        message = vdaf.verifier_shares_to_message(ctx, [leader_share, share])
        out_share = vdaf.verify_next(ctx, state, message)
    except ReportRejected:
        return Rejected()
    outbound = encode_message(FINISH, vdaf.encode_verifier_message(message))
    return FinishedWithOutbound(out_share, outbound)


def leader_continued(
    vdaf: Prio3[Any, Any], ctx: bytes, state: Continued, inbound: bytes
) -> Finished | Rejected:
    """The Leader's step on the Helper's answer: ``finish`` releases its output share."""
    try:
        kind, fields = decode_message(inbound)
        if kind != FINISH or state.verify_round + 1 != vdaf.ROUNDS:
            return Rejected()
        message = vdaf.decode_verifier_message(fields[0])
        return Finished(vdaf.verify_next(ctx, state.verify_state, message))
    except ReportRejected:
        return Rejected()
