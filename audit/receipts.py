"""Receipts: proof for an analyst that a node logged the entries of its response.

A receipt carries the node's signed checkpoint (optionally cosigned by witnesses) and, for
each of the response's entries, its leaf bytes and RFC 9162 inclusion proof.  The analyst's
client checks it against the node's pinned origin and key before returning a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import audit.merkle as merkle
from audit.checkpoint import log_verifier, open_checkpoint
from audit.errors import AuditError, InvalidReceipt
from audit.note import Verifier, raw_public_key
from audit.origins import ledger_origin
from audit.records import DataUseRecord, decode_leaf

__all__ = ["MAX_RECEIPT_ENTRIES", "Receipt", "ReceiptEntry", "check_receipt", "verify_receipt"]

MAX_RECEIPT_ENTRIES = 1024


@dataclass(frozen=True)
class ReceiptEntry:
    """One logged entry: its ``index``, ``leaf`` bytes and inclusion ``proof``."""

    index: int
    leaf: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Receipt:
    """A signed ``checkpoint`` note and the ``entries`` it includes."""

    checkpoint: str
    entries: tuple[ReceiptEntry, ...]


def verify_receipt(
    receipt: Receipt,
    origin: str,
    public_key: bytes | Ed25519PublicKey,
    *,
    witnesses: Iterable[Verifier] = (),
    quorum: int = 0,
) -> list[DataUseRecord]:
    """Verify a receipt and return the records it proves were logged, in receipt order.

    Parameters
    ----------
    receipt : Receipt
        As received from the node.
    origin : str
        The node log's pinned origin.
    public_key : bytes or Ed25519PublicKey
        The node log's pinned Ed25519 public key (32 raw bytes or a key object).
    witnesses : Iterable[Verifier]
        Trusted witness keys (type 0x04), when a cosigned checkpoint is required.
    quorum : int
        How many of ``witnesses`` must have cosigned the checkpoint.

    Raises
    ------
    InvalidReceipt
        If anything does not verify (detail-free on purpose).
    """
    if quorum < 0:
        raise ValueError(f"quorum must be >= 0, got {quorum}")
    pub = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    try:
        return _verify(receipt, log_verifier(origin, pub), list(witnesses), quorum)
    except (AuditError, ValueError, TypeError):
        raise InvalidReceipt("receipt does not verify") from None


def _verify(
    receipt: Receipt, log: Verifier, witnesses: list[Verifier], quorum: int
) -> list[DataUseRecord]:
    opened = open_checkpoint(receipt.checkpoint, log)
    if len(opened.cosigners(witnesses)) < quorum:
        raise InvalidReceipt("quorum not met")
    cp = opened.checkpoint
    if not receipt.entries or len(receipt.entries) > MAX_RECEIPT_ENTRIES:
        raise InvalidReceipt("bad entry count")
    records = []
    for e in receipt.entries:
        index, record = decode_leaf(e.leaf)
        if index != e.index:
            raise InvalidReceipt("leaf claims another index")
        merkle.verify_inclusion(merkle.hash_leaf(e.leaf), e.index, cp.size, e.proof, cp.root_hash)
        records.append(record)
    return records


def check_receipt(
    receipt: Receipt,
    public_key: bytes | Ed25519PublicKey,
    *,
    node: str,
    job_id: str,
    request_digests: Sequence[str],
    decisions: Sequence[str],
    result_digest: str,
) -> list[DataUseRecord]:
    """Verify ``node``'s receipt and that it proves exactly the entries of one answer.

    The one receipt check of every client (queries, protocol steps, intersection-sums):
    the receipt verifies against ``node``'s pinned origin (:func:`audit.origins.ledger_origin`)
    and key, its records are ``node``'s, of ``job_id``, with ``decisions`` and
    ``request_digests`` in order, and the last one's result digest is ``result_digest``.

    Raises
    ------
    InvalidReceipt
        ``"receipt does not verify"`` or ``"receipt does not match its answer"``.
    """
    records = verify_receipt(receipt, ledger_origin(node), public_key)
    ok = (
        [r.decision for r in records] == list(decisions)
        and [r.request_digest for r in records] == list(request_digests)
        and all(r.node == node and r.job_id == job_id for r in records)
        and records[-1].result_digest == result_digest
    )
    if not ok:
        raise InvalidReceipt("receipt does not match its answer")
    return records
