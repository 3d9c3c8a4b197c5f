"""Errors raised by :mod:`datafed.hazmat`.

Hierarchy::

    HazmatError              (a datafed.errors.DatafedError)
    ├── DecryptionError      a ciphertext did not decrypt to a valid plaintext
    ├── InvalidCiphertext    a ciphertext from the wire is not in the ciphertext group
    ├── InvalidShare         shares are inconsistent or malformed
    ├── InvalidPoint         a group element from the wire is not a valid point
    └── PackingOverflow      a packed slot overflowed its declared headroom

Every error here is detail-free on purpose: its message never says *which*
check failed, so that it cannot serve as an oracle.  Bad arguments (wrong
types, out-of-range parameters) raise :class:`ValueError` or :class:`TypeError`
with an exact message instead.
"""

from __future__ import annotations

from datafed.errors import DatafedError


class HazmatError(DatafedError):
    """Base class of every verification failure in :mod:`datafed.hazmat`."""

    message = "hazmat verification failed"

    def __init__(self) -> None:
        super().__init__(self.message)


class DecryptionError(HazmatError):
    """A ciphertext did not decrypt to a valid plaintext."""

    message = "decryption failed"


class InvalidCiphertext(HazmatError):
    """A ciphertext is outside the ciphertext group of its key."""

    message = "invalid ciphertext"


class InvalidShare(HazmatError):
    """Secret shares are inconsistent, duplicated or malformed."""

    message = "invalid share"


class InvalidPoint(HazmatError):
    """An encoded group element is not a valid prime-order group point."""

    message = "invalid group element"


class PackingOverflow(HazmatError):
    """A packed slot left its declared range (more additions than declared)."""

    message = "packed value overflow"
