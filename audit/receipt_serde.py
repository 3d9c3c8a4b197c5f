"""Receipt <-> protobuf (``datafed.proto.v1.Receipt``); the only place receipts meet the wire."""

from __future__ import annotations

from audit.receipts import MAX_RECEIPT_ENTRIES, Receipt, ReceiptEntry
from datafed.proto.v1 import ledger_pb2

__all__ = ["receipt_from_proto", "receipt_to_proto"]


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
