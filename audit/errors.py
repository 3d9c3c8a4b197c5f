"""Errors of the audit ledger.

The hierarchy::

    AuditError
    ├── InvalidProof            a Merkle inclusion/consistency proof does not verify
    │   └── RootMismatchError   ... and says which root was expected and which computed
    ├── InvalidRecord           leaf bytes are not a canonical data-use record
    ├── InvalidSignature        a signed note, checkpoint or cosignature does not verify
    ├── InvalidReceipt          a receipt does not verify (one detail-free error for clients)
    ├── LedgerError             the ledger store cannot be used (locked, corrupt, closed)
    ├── WitnessRefusal          a witness refused to cosign (carries the size it holds)
    └── VerificationFailure     the auditor's verifier found problems (carries named findings)

Bad arguments raise ``ValueError`` / ``TypeError`` with an exact message instead; the
verification errors are detail-free unless stated otherwise, so they are no oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AuditError",
    "InvalidProof",
    "InvalidReceipt",
    "InvalidRecord",
    "InvalidSignature",
    "LedgerError",
    "LineageError",
    "RootMismatchError",
    "VerificationFailure",
    "WitnessRefusal",
]


class AuditError(Exception):
    """Base class of every error raised by :mod:`audit`."""


class LineageError(AuditError):
    """The ledgers do not support a model's lineage (the message says which link broke)."""


class InvalidProof(AuditError):
    """A Merkle inclusion or consistency proof does not verify."""


class RootMismatchError(InvalidProof):
    """The root computed from a proof differs from the expected root.

    Parameters
    ----------
    expected : bytes
        The root the caller trusts.
    computed : bytes
        The root the proof leads to.
    """

    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(f"root mismatch: expected {expected.hex()}, computed {computed.hex()}")
        self.expected = expected
        self.computed = computed


class InvalidRecord(AuditError):
    """Leaf bytes are not the canonical encoding of a data-use record."""


class InvalidSignature(AuditError):
    """A signed note, checkpoint or cosignature does not verify."""


class InvalidReceipt(AuditError):
    """A receipt does not verify."""


class LedgerError(AuditError):
    """The ledger store cannot be used (locked by another writer, corrupt, or closed)."""


class WitnessRefusal(AuditError):
    """A witness refused to cosign a checkpoint.

    Parameters
    ----------
    reason : str
        Why, e.g. ``"inconsistent"`` or ``"unknown origin"``.
    witness_size : int
        The size of the last checkpoint the witness cosigned for that origin (0 if none).
    """

    def __init__(self, reason: str, witness_size: int) -> None:
        super().__init__(f"witness refused: {reason} (witness holds size {witness_size})")
        self.reason = reason
        self.witness_size = witness_size


class VerificationFailure(AuditError):
    """The verifier found one or more named problems.

    Parameters
    ----------
    findings : Sequence[str]
        One line per problem, each starting with its name (``"entry-modified at 17"``).
    """

    def __init__(self, findings: Sequence[str]) -> None:
        super().__init__("; ".join(findings) if findings else "verification failed")
        self.findings = list(findings)
