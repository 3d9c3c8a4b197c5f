"""``ledger.proto`` <-> domain values: the one place ledger messages meet the wire.

Used by the node's LedgerService, the auditor's remote client, and every receipt a node
attaches to an answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from audit.note import NoteSignature, parse_note
from audit.receipts import MAX_RECEIPT_ENTRIES, Receipt, ReceiptEntry
from datafed.proto.v1 import ledger_pb2

__all__ = [
    "MAX_ENTRIES_PER_CALL",
    "cosignature_from_proto",
    "cosignature_to_proto",
    "entries_from_proto",
    "entries_to_proto",
    "proof_hashes",
    "receipt_from_proto",
    "receipt_to_proto",
]

MAX_ENTRIES_PER_CALL = 1000
MAX_PROOF_HASHES = 128


def entries_to_proto(
    start: int, leaves: Sequence[bytes], private: Mapping[int, bytes] | None = None
) -> ledger_pb2.GetEntriesResponse:
    """Return the wire form of leaves ``start, start + 1, ...`` and their private parts."""
    private = private or {}
    return ledger_pb2.GetEntriesResponse(
        start=start,
        leaves=list(leaves),
        private=[private.get(start + k, b"") for k in range(len(leaves))] if private else [],
    )


def entries_from_proto(
    msg: ledger_pb2.GetEntriesResponse, start: int, count: int
) -> tuple[list[bytes], dict[int, bytes]]:
    """Return the leaves and ``{index: opening}`` of a response for ``[start, start + count)``.

    Raises
    ------
    ValueError
        If the response covers another range or its private parts do not align.
    """
    if msg.start != start or len(msg.leaves) != count:
        raise ValueError(f"node returned a wrong range for entries [{start}, {start + count})")
    if len(msg.private) not in (0, count):
        raise ValueError(f"node returned {len(msg.private)} private parts for {count} entries")
    private = {start + k: bytes(p) for k, p in enumerate(msg.private) if p}
    return [bytes(x) for x in msg.leaves], private


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


def receipt_to_proto(receipt: Receipt) -> ledger_pb2.Receipt:
    """Return the wire form of ``receipt``."""
    return ledger_pb2.Receipt(
        checkpoint=receipt.checkpoint.encode(),
        entries=[
            ledger_pb2.ReceiptEntry(index=e.index, leaf=e.leaf, inclusion_proof=list(e.proof))
            for e in receipt.entries
        ],
    )


def receipt_from_proto(msg: ledger_pb2.Receipt) -> Receipt:
    """Return the receipt in ``msg``; raise ValueError if it is malformed on the wire.

    Only the shape is checked here; :func:`audit.receipts.verify_receipt` checks the proofs.
    """
    if len(msg.entries) > MAX_RECEIPT_ENTRIES:
        raise ValueError(f"a receipt holds at most {MAX_RECEIPT_ENTRIES} entries")
    try:
        checkpoint = bytes(msg.checkpoint).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("receipt checkpoint is not UTF-8") from None
    entries = tuple(
        ReceiptEntry(int(e.index), bytes(e.leaf), tuple(bytes(h) for h in e.inclusion_proof))
        for e in msg.entries
    )
    return Receipt(checkpoint, entries)
