"""Node-to-node messages through the analyst: signed by the sender, sealed to the recipient.

Nodes never connect to each other; the analyst's client relays.  What one node sends
another is an ``Envelope`` (job, statement digest, mode, sender, recipient, body) signed
with the sender's Ed25519 certificate key, then put in a libsodium sealed box (X25519 +
XSalsa20-Poly1305, libsodium ``crypto_box_seal``) for the recipient's X25519 key, which
is derived from the Ed25519 key in the recipient's certificate (:mod:`datafed.pki.peers`).
So the analyst can neither read a share nor forge, replay (other job or statement) or
redirect one: every check is made by the recipient, which trusts only certificates
issued by the federation CA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from datafed.errors import PkiError
from datafed.hazmat.errors import HazmatError
from datafed.modes._base import NodeEnv
from datafed.modes.errors import InvalidEnvelope
from datafed.pki.ca import Identity
from datafed.pki.peers import verify_peer, x25519_private, x25519_public
from datafed.proto.v1 import protocol_pb2

__all__ = [
    "ENVELOPE_CONTEXT",
    "MAX_PARTICIPANTS",
    "check_roster",
    "open_from_each",
    "open_sealed",
    "peers",
    "seal",
]

T = TypeVar("T")

#: Domain separation: an envelope signature is never a valid request or checkpoint one.
ENVELOPE_CONTEXT = b"datafed/v1/sealed-envelope\x00"
#: Most nodes one protected query may span.
MAX_PARTICIPANTS = 64


def peers(env: NodeEnv, pems: Sequence[bytes], what: str) -> list[Identity]:
    """Verify certificates against the federation CA (role ``node``), distinct names.

    Raises
    ------
    ValueError
        With an exact message naming ``what`` was refused.
    """
    if not 1 <= len(pems) <= MAX_PARTICIPANTS:
        raise ValueError(f"between 1 and {MAX_PARTICIPANTS} {what}s required, got {len(pems)}")
    out: list[Identity] = []
    for pem in pems:
        try:
            out.append(verify_peer(bytes(pem), env.ca_pem))
        except PkiError as exc:
            raise ValueError(f"{what} certificate refused: {exc}") from exc
    names = [i.name for i in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a {what} is listed twice")
    return out


def check_roster(env: NodeEnv, participants: Sequence[Identity]) -> None:
    """Refuse participants that are not exactly the statement's roster (or omit this node).

    Raises
    ------
    ValueError
        With an exact message.
    """
    names = sorted(p.name for p in participants)
    if env.node not in names:
        raise ValueError("this node is not among the listed participants")
    if env.roster and names != sorted(env.roster):
        raise ValueError("the participants' certificates do not match the statement's roster")


def seal(env: NodeEnv, mode: str, recipient: Identity, body: bytes) -> protocol_pb2.SealedEnvelope:
    """Sign ``body`` for this job and seal it to ``recipient``."""
    inner = protocol_pb2.Envelope(
        job_id=env.job_id,
        mode=mode,
        sender=env.node,
        recipient=recipient.name,
        body=body,
        binding=env.binding,
    ).SerializeToString()
    signed = protocol_pb2.SignedEnvelope(
        envelope=inner, signature=env.signing_key.sign(ENVELOPE_CONTEXT + inner)
    ).SerializeToString()
    box = SealedBox(PublicKey(x25519_public(recipient)))
    return protocol_pb2.SealedEnvelope(recipient=recipient.name, sealed=bytes(box.encrypt(signed)))


def open_sealed(
    env: NodeEnv, mode: str, senders: Mapping[str, Identity], item: protocol_pb2.SealedEnvelope
) -> tuple[str, bytes]:
    """Open an envelope sealed to this node; return ``(sender, body)``.

    Raises
    ------
    InvalidEnvelope
        If it does not open, is not signed by one of ``senders``, or is for another
        job, mode or recipient (detail-free).
    """
    try:
        box = SealedBox(PrivateKey(x25519_private(env.signing_key)))
        signed = protocol_pb2.SignedEnvelope.FromString(box.decrypt(bytes(item.sealed)))
        inner = protocol_pb2.Envelope.FromString(signed.envelope)
        sender = senders.get(inner.sender)
        if sender is None:
            raise InvalidEnvelope
        sender.signing_key.verify(signed.signature, ENVELOPE_CONTEXT + signed.envelope)
    except (CryptoError, DecodeError, InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidEnvelope from exc
    if (inner.job_id, inner.binding, inner.mode, inner.recipient, item.recipient) != (
        env.job_id,
        env.binding,
        mode,
        env.node,
        env.node,
    ):
        raise InvalidEnvelope
    return inner.sender, bytes(inner.body)


def open_from_each(
    env: NodeEnv,
    mode: str,
    participants: Mapping[str, Identity],
    payload: bytes,
    what: str,
    parse: Callable[[bytes], T],
) -> dict[str, T]:
    """An aggregator's input: one envelope from every participant, opened and parsed.

    ``payload`` is the relayed ``SealedBundle``; ``parse`` reads one body (ValueError if
    bad, with its own message). Refuses, with ValueError naming ``what``, a malformed
    bundle, a count other than one per participant, an envelope that does not open or
    verify (another job, statement, mode or recipient) or parse, and a participant missing
    or repeated.
    """
    try:
        bundle = protocol_pb2.SealedBundle.FromString(payload)
    except DecodeError as exc:
        raise ValueError(f"malformed {what} bundle") from exc
    if len(bundle.items) != len(participants):
        raise ValueError(
            f"expected one {what} from each of {len(participants)} participants, "
            f"got {len(bundle.items)}"
        )
    out: dict[str, T] = {}
    for item in bundle.items:
        try:
            sender, body = open_sealed(env, mode, participants, item)
        except InvalidEnvelope as exc:
            raise ValueError(f"a {what} does not open or verify") from exc
        try:
            out[sender] = parse(body)  # a ValueError of the parser keeps its own message
        except (DecodeError, HazmatError) as exc:
            raise ValueError(f"a {what} does not parse") from exc
    if len(out) != len(participants):
        raise ValueError(f"a participant's {what} is missing or repeated")
    return out
