"""Errors raised by :mod:`datafed.psi`.

Hierarchy::

    DatafedError                 (datafed.errors)
    └── PsiError                 base of intersection-sum errors
        └── InvalidPsiMessage    a relayed peer message failed verification (detail-free)

Bad arguments (a malformed column reference, a modulus out of range, a payload of the
wrong length) raise :class:`ValueError` or :class:`TypeError` with an exact message.
Whatever involves a secret or a signature -- a statement whose certificate or signature
does not verify, a point off the group, a sealed box that does not open, a ciphertext
outside ``Z*_{n^2}`` -- raises :class:`InvalidPsiMessage`, which never says which check
failed, so a relaying analyst learns nothing from probing a node.
"""

from __future__ import annotations

from datafed.errors import DatafedError

__all__ = ["InvalidPsiMessage", "PsiError"]


class PsiError(DatafedError):
    """Base class of every error in :mod:`datafed.psi`."""


class InvalidPsiMessage(PsiError):
    """A relayed message failed verification (no detail on purpose)."""

    def __init__(self) -> None:
        super().__init__("intersection-sum message failed verification")

    def __reduce__(self) -> tuple[type[InvalidPsiMessage], tuple[()]]:
        # Picklable across the worker pool although __init__ takes no arguments.
        return (type(self), ())
