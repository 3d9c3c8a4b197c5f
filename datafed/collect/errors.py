"""Errors of :mod:`datafed.collect` (a branch of :class:`datafed.errors.DatafedError`).

::

    DatafedError
    └── CollectError         a collection task, report or window cannot be used as asked
        └── SealError        a sealed Helper input share does not open (detail-free)
"""

from __future__ import annotations

from datafed.errors import DatafedError

__all__ = ["CollectError", "SealError"]


class CollectError(DatafedError):
    """A collection task, report or window cannot be used as asked; the message says why."""


class SealError(CollectError):
    """A sealed input share does not open. Carries no detail, to give no oracle."""

    def __init__(self) -> None:
        super().__init__("sealed input share does not open")
