"""Errors raised by the protection modes.

Hierarchy::

    datafed.errors.ProtocolError
    └── InvalidEnvelope     a sealed node-to-node message did not open or verify

Bad parameters from the analyst raise :class:`ValueError` with an exact message (the
node turns it into ``INVALID_ARGUMENT``); a peer's payload that does not fit the protocol
raises :class:`~datafed.errors.ProtocolError`.  ``InvalidEnvelope`` never says which
check failed, so that it is no oracle.
"""

from __future__ import annotations

from datafed.errors import ProtocolError

__all__ = ["InvalidEnvelope"]


class InvalidEnvelope(ProtocolError):
    """A sealed envelope did not open, verify, or belong to this job (no detail on purpose)."""

    def __init__(self) -> None:
        super().__init__("sealed envelope does not open or verify")
