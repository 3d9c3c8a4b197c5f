"""The datafed audit ledger: data-use records in an RFC 9162 Merkle log with signed checkpoints.

Imports nothing from the repository except :mod:`datafed.proto`.  Start with
:class:`Ledger` (a node's log), :class:`DataUseRecord` (one entry) and :class:`LedgerHead`.
"""

from __future__ import annotations

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
from audit.records import DataUseRecord, decode_leaf

__all__ = [
    "AuditError",
    "DataUseRecord",
    "InvalidProof",
    "InvalidReceipt",
    "InvalidRecord",
    "InvalidSignature",
    "Ledger",
    "LedgerError",
    "LedgerHead",
    "RootMismatchError",
    "VerificationFailure",
    "WitnessRefusal",
    "decode_leaf",
]
