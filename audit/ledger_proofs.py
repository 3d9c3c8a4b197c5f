"""What a ledger proves: signed checkpoints (with cosignatures), RFC 9162 proofs, receipts.

Every checkpoint the log signs is stored durably before it is returned, so each can be
exported and checked for consistency later; witnesses' cosignature lines are attached to
the stored note.  Proofs are computed from the stored subtrees (:mod:`audit.merkle`).
:class:`audit.ledger.Ledger` is the class to use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import audit.merkle as merkle
from audit.checkpoint import Checkpoint, add_signatures, sign_checkpoint
from audit.note import NoteSignature
from audit.receipts import MAX_RECEIPT_ENTRIES, Receipt, ReceiptEntry
from audit.store import LedgerStore

__all__ = ["LedgerProofs"]


class LedgerProofs:
    """The checkpoint and proof methods of :class:`audit.ledger.Ledger`."""

    store: LedgerStore
    origin: str
    signing_key: Ed25519PrivateKey
    _tree: merkle.CompactRange
    _cp_lock: threading.Lock
    _latest_cp: tuple[int, str] | None  # the newest signed checkpoint: (size, note)

    def root_at(self, size: int) -> bytes:
        """Return the root hash of the tree at ``size`` (at most the current size)."""
        self._check_size(size)
        ids = merkle.range_nodes(0, size)
        if not ids:
            return merkle.EMPTY_ROOT
        tree = merkle.CompactRange(size, self.store.get_hashes(ids))
        return tree.root()

    def _check_size(self, size: int) -> int:
        current = self._tree.size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"tree size must be an int, got {type(size).__name__}")
        if not 0 <= size <= current:
            raise ValueError(f"tree size must be in [0, {current}], got {size}")
        return current

    @property
    def signed_size(self) -> int:
        """Entries the newest signed checkpoint covers (0 before the first)."""
        latest = self._latest_cp
        return latest[0] if latest is not None else 0

    def checkpoint(self) -> str:
        """Return a signed checkpoint note of the current tree (with any cosignatures).

        The note is stored durably before it is returned, so every checkpoint the log has
        signed can be exported and checked for consistency later.
        """
        with self._cp_lock:
            tree = self._tree
            if self._latest_cp is not None and self._latest_cp[0] == tree.size:
                return self._latest_cp[1]
            note = sign_checkpoint(
                Checkpoint(self.origin, tree.size, tree.root()), self.signing_key
            )
            self.store.put_checkpoint(tree.size, note.encode())
            self._latest_cp = (tree.size, note)
            return note

    def add_cosignatures(self, size: int, signatures: Sequence[NoteSignature]) -> str:
        """Durably attach witness cosignature lines to the stored checkpoint of ``size``.

        The lines are stored as given; verifiers check them against their own policy.
        """
        with self._cp_lock:
            notes = dict(self.store.get_checkpoints())
            if size not in notes:
                raise ValueError(f"no checkpoint of size {size} was signed by this log")
            note = add_signatures(notes[size].decode(), signatures)
            self.store.put_checkpoint(size, note.encode(), replace=True)
            if self._latest_cp is not None and self._latest_cp[0] == size:
                self._latest_cp = (size, note)
            return note

    def checkpoints(self) -> list[str]:
        """Return every checkpoint this log signed (with cosignatures), by size."""
        return [n.decode() for _, n in self.store.get_checkpoints()]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of entry ``index`` in the tree of ``size`` (default: now)."""
        size = self._tree.size if size is None else size
        self._check_size(size)
        return merkle.inclusion_proof(index, size, self.store)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from tree size ``size1`` to ``size2`` (default: now)."""
        size2 = self._tree.size if size2 is None else size2
        self._check_size(size2)
        return merkle.consistency_proof(size1, size2, self.store)

    def receipt(self, indexes: Sequence[int]) -> Receipt:
        """Return a receipt proving entries ``indexes`` under a signed checkpoint."""
        if not indexes or len(indexes) > MAX_RECEIPT_ENTRIES:
            raise ValueError(f"a receipt covers 1 to {MAX_RECEIPT_ENTRIES} entries")
        latest = self._latest_cp
        if latest is not None and latest[0] > max(indexes):
            size, note = latest
        else:
            note = self.checkpoint()
            size = Checkpoint.parse(note[: note.rfind("\n\n") + 1]).size
        entries = []
        for i in indexes:
            if not 0 <= i < size:
                raise ValueError(f"entry index must be in [0, {size}), got {i}")
            leaf = self.store.get_leaves(i, i + 1)[0]
            proof = merkle.inclusion_proof(i, size, self.store)
            entries.append(ReceiptEntry(i, leaf, tuple(proof)))
        return Receipt(note, tuple(entries))
