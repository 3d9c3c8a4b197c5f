"""Ledger RPC messages <-> domain values, for the servicer and the remote client."""

from __future__ import annotations

from collections.abc import Sequence

from audit.note import NoteSignature, parse_note
from datafed.proto.v1 import ledger_pb2

__all__ = [
    "MAX_ENTRIES_PER_CALL",
    "cosignature_from_proto",
    "cosignature_to_proto",
    "entries_to_proto",
    "proof_hashes",
]

MAX_ENTRIES_PER_CALL = 1000
MAX_PROOF_HASHES = 128


def entries_to_proto(start: int, leaves: Sequence[bytes]) -> ledger_pb2.GetEntriesResponse:
    """Return the wire form of leaves ``start, start + 1, ...``."""
    return ledger_pb2.GetEntriesResponse(start=start, leaves=list(leaves))


def proof_hashes(hashes: Sequence[bytes]) -> list[bytes]:
    """Return proof hashes from the wire; raise ValueError if there are too many or bad sizes."""
    if len(hashes) > MAX_PROOF_HASHES or any(len(h) != 32 for h in hashes):
        raise ValueError("a proof holds at most 128 hashes of 32 bytes")
    return [bytes(h) for h in hashes]


def cosignature_to_proto(sig: NoteSignature) -> ledger_pb2.AddCheckpointResponse:
    """Return the wire form of a witness's cosignature line."""
    return ledger_pb2.AddCheckpointResponse(cosignature=sig.line().encode())


def cosignature_from_proto(msg: ledger_pb2.AddCheckpointResponse, text: str) -> NoteSignature:
    """Return the cosignature line in ``msg`` (parsed against checkpoint ``text``).

    Raises
    ------
    ValueError
        If the line is not a single well-formed signature line.
    """
    try:
        line = bytes(msg.cosignature).decode("utf-8")
        _, sigs = parse_note(text + "\n" + line)
    except Exception:
        raise ValueError("malformed cosignature line") from None
    if len(sigs) != 1:
        raise ValueError("expected exactly one cosignature line")
    return sigs[0]
