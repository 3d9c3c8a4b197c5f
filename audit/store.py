"""The storage interface of a ledger; :mod:`audit.sqlite_store` is the default implementation.

A store keeps the leaves, their hashes, every completed interior node of the Merkle tree
(addressed by :data:`audit.merkle.NodeID`), the private parts of entries
(:mod:`audit.private`) and the signed checkpoints.  It is a
:class:`audit.merkle.HashReader`, so proof generation reads stored subtrees instead of
rehashing leaves.  A batch is durable (committed and fsynced) when ``append`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from audit.merkle import NodeID

__all__ = ["LedgerStore"]


class LedgerStore(Protocol):
    """Durable storage of one append-only log."""

    def size(self) -> int:
        """Return the number of committed entries."""
        ...

    def get_meta(self, key: str) -> bytes | None:
        """Return a metadata value, or ``None`` if unset."""
        ...

    def set_meta(self, key: str, value: bytes) -> None:
        """Durably set a metadata value."""
        ...

    def append(
        self,
        first_index: int,
        leaves: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        nodes: Sequence[tuple[NodeID, bytes]],
        private: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        """Durably commit entries ``first_index ...`` with hashes and new interior nodes.

        ``private`` holds ``(index, opening)`` private parts; all in one transaction.
        """
        ...

    def get_private(self, start: int, end: int) -> dict[int, bytes]:
        """Return the private-part openings of entries ``[start, end)`` by index."""
        ...

    def get_hashes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Return the hash of each complete subtree in ``ids``, in order."""
        ...

    def get_leaves(self, start: int, end: int) -> list[bytes]:
        """Return the leaves ``[start, end)``."""
        ...

    def get_entries(self, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        """Return ``(index, leaf, stored leaf hash)`` for ``[start, end)``, as stored."""
        ...

    def put_checkpoint(self, size: int, note: bytes, *, replace: bool = False) -> None:
        """Durably store a checkpoint for ``size``; keep an existing one unless ``replace``."""
        ...

    def get_checkpoints(self) -> list[tuple[int, bytes]]:
        """Return every stored ``(size, note)``, by size."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
