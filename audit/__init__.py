"""The datafed audit ledger: data-use records in an RFC 9162 Merkle log with signed checkpoints.

Imports nothing from the repository except :mod:`datafed.proto`.  A node keeps a
:class:`Ledger` of :class:`DataUseRecord` entries, signs C2SP checkpoints, hands analysts a
:class:`Receipt` per response (:func:`verify_receipt` checks it) and may witness other nodes'
logs with a :class:`WitnessStore`.  Auditors run :func:`verify_log` (``datafed-audit``)
against their own :class:`Policy`.
"""

from __future__ import annotations

from audit.checkpoint import Checkpoint
from audit.errors import (
    AuditError,
    InvalidProof,
    InvalidReceipt,
    InvalidRecord,
    InvalidSignature,
    LedgerError,
    RootMismatchError,
    VerificationFailure,
    WitnessRefusal,
)
from audit.ledger import Ledger, LedgerHead
from audit.origins import ledger_origin, witness_name
from audit.policy import Policy
from audit.receipts import Receipt, ReceiptEntry, check_receipt, verify_receipt
from audit.records import DataUseRecord, decode_leaf
from audit.verify import Finding, VerifyReport, verify_log
from audit.witness import WitnessStore

__all__ = [
    "AuditError",
    "Checkpoint",
    "DataUseRecord",
    "Finding",
    "InvalidProof",
    "InvalidReceipt",
    "InvalidRecord",
    "InvalidSignature",
    "Ledger",
    "LedgerError",
    "LedgerHead",
    "Policy",
    "Receipt",
    "ReceiptEntry",
    "RootMismatchError",
    "VerificationFailure",
    "VerifyReport",
    "WitnessRefusal",
    "WitnessStore",
    "check_receipt",
    "decode_leaf",
    "ledger_origin",
    "verify_log",
    "verify_receipt",
    "witness_name",
]
