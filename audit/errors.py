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

:class:`ExitCode` is the one table of exit codes of the three commands (``datafed``,
``datafed-node``, ``datafed-audit``): it lives here, the lowest layer all three import,
and every error class names its code (``exit_code``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

__all__ = [
    "EXIT_CODES_HELP",
    "AuditError",
    "ExitCode",
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


class ExitCode(IntEnum):
    """Exit codes of ``datafed``, ``datafed-node`` and ``datafed-audit`` (docs/cli.md)."""

    #: Done.
    OK = 0
    #: A check ran and found problems (a ledger does not verify, a config is invalid).
    FAILED_CHECK = 1
    #: The command could not run: bad arguments, input files, configuration or query.
    USAGE = 2
    #: A node refused or failed the request (its gRPC status is printed).
    REFUSED = 3
    #: A node could not be reached in time.
    UNREACHABLE = 4


#: The table as the commands' ``--help`` shows it.
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 a check found problems; 2 bad arguments, input or "
    "configuration; 3 a node refused or failed; 4 a node could not be reached."
)


class AuditError(Exception):
    """Base class of every error raised by :mod:`audit`."""

    exit_code = ExitCode.USAGE


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

    Its exit code is :attr:`ExitCode.FAILED_CHECK`.

    Parameters
    ----------
    findings : Sequence[str]
        One line per problem, each starting with its name (``"entry-modified at 17"``).
    """

    exit_code = ExitCode.FAILED_CHECK

    def __init__(self, findings: Sequence[str]) -> None:
        super().__init__("; ".join(findings) if findings else "verification failed")
        self.findings = list(findings)
