"""The node's append-only data-use ledger: durable, group-committed, RFC 9162 Merkle log.

``append`` blocks until its entry is committed and fsynced.  Concurrent callers (threads,
e.g. ``asyncio.to_thread``) are *group-committed*: whoever finds no commit in flight becomes
the leader, takes every pending entry, extends a copy of the tree's compact range, writes
the batch in one transaction and then publishes the new tree state and wakes the others.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit import merkle
from audit.checkpoint import Checkpoint, add_signatures, open_checkpoint, sign_checkpoint
from audit.checkpoint import log_verifier as _log_verifier
from audit.errors import LedgerError
from audit.note import NoteSignature, Verifier
from audit.receipts import MAX_RECEIPT_ENTRIES, Receipt, ReceiptEntry
from audit.records import DataUseRecord, decode_leaf, encode_body, encode_leaf
from audit.sqlite_store import SQLiteStore
from audit.store import LedgerStore

__all__ = ["Ledger", "LedgerHead", "check_origin"]

MAX_BATCH = 4096


@dataclass(frozen=True)
class LedgerHead:
    """A tree head: the log's ``origin``, its ``size`` and RFC 9162 ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes


def check_origin(origin: str) -> str:
    """Return ``origin`` if it is a valid log origin / note key name, else raise ValueError.

    C2SP tlog-checkpoint: the origin is a schema-less URL-like string; signed-note key
    names must be non-empty and contain no Unicode spaces or ``+``.
    """
    if not isinstance(origin, str):
        raise TypeError(f"origin must be a str, got {type(origin).__name__}")
    if not origin or any(c.isspace() or c == "+" for c in origin) or not origin.isprintable():
        raise ValueError(f"origin must be non-empty without spaces or '+', got {origin!r}")
    return origin


class _Ticket:
    """Entries of one caller, woken once (its ``gate`` released): when done, or to lead."""

    __slots__ = ("bodies", "done", "error", "first", "gate")

    def __init__(self, bodies: list[bytes], gate: threading.Lock) -> None:
        self.bodies = bodies
        self.done = False
        self.first = -1
        self.error: BaseException | None = None
        self.gate = gate


def _wake(tickets: Sequence[_Ticket]) -> None:
    """Wake each ticket's waiting thread."""
    for t in tickets:
        t.gate.release()


def _encode(records: Sequence[DataUseRecord]) -> list[bytes]:
    for r in records:
        if not isinstance(r, DataUseRecord):
            raise TypeError(f"expected DataUseRecord, got {type(r).__name__}")
    return [encode_body(r) for r in records]


class Ledger:
    """One node's ledger; open it with :meth:`Ledger.open`."""

    def __init__(self, store: LedgerStore, origin: str, signing_key: Ed25519PrivateKey) -> None:
        self.store = store
        self.origin = origin
        self.signing_key = signing_key
        self._cv = threading.Condition()
        self._pending: list[_Ticket] = []
        self._committing = False
        self._closed = False
        self._cp_lock = threading.Lock()
        self._tree = merkle.CompactRange()
        self._reload()
        if self._closed:
            raise LedgerError("ledger store is unreadable")
        self._latest_cp = self._check_checkpoints()

    def _check_checkpoints(self) -> tuple[int, str] | None:
        """Refuse a store whose signed checkpoints do not match its entries (rolled back)."""
        stored = self.store.get_checkpoints()
        if not stored:
            return None
        size, note = stored[-1]
        cp = open_checkpoint(note, self.verifier).checkpoint
        if size > self._tree.size or cp.root_hash != self.root_at(size):
            raise LedgerError(
                f"ledger store does not match its checkpoint at size {size} "
                f"({self._tree.size} entries): rolled back or altered"
            )
        return size, note.decode()

    @classmethod
    def open(cls, path: Path, origin: str, signing_key: Ed25519PrivateKey) -> Ledger:
        """Open (or create) the ledger at ``path`` for log ``origin`` signed by ``signing_key``.

        Raises
        ------
        ValueError
            If the file belongs to another origin or key.
        LedgerError
            If another writer holds the ledger or the store is unusable.
        """
        check_origin(origin)
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TypeError("signing_key must be an Ed25519PrivateKey")
        pub = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        store = SQLiteStore(Path(path))
        try:
            for key, value in (("origin", origin.encode()), ("public_key", pub)):
                stored = store.get_meta(key)
                if stored is None:
                    store.set_meta(key, value)
                elif stored != value:
                    raise ValueError(f"ledger {Path(path).name} belongs to another {key}")
            return cls(store, origin, signing_key)
        except BaseException:
            store.close()
            raise

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key of the log."""
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def append(self, record: DataUseRecord) -> int:
        """Append one record; return its index once it is committed and fsynced."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[DataUseRecord]) -> list[int]:
        """Append records atomically (one commit); return their indexes, in order."""
        bodies = _encode(records)
        if not bodies:
            return []
        gate = threading.Lock()
        gate.acquire()
        ticket = _Ticket(bodies, gate=gate)
        if not self._enqueue(ticket):
            gate.acquire()  # released when our batch is done, or to hand us the lead
        if not ticket.done:
            self._lead(ticket)
        return self._result(ticket)

    async def append_async(self, record: DataUseRecord) -> int:
        """Like :meth:`append` for asyncio callers (see :meth:`append_many_async`)."""
        return (await self.append_many_async([record]))[0]

    async def append_many_async(self, records: Sequence[DataUseRecord]) -> list[int]:
        """Like :meth:`append_many` for asyncio callers.

        The append runs in a worker thread and joins the same group commits as threaded
        callers.  A cancelled caller's entries may still be committed: the thread is not
        interrupted, so a cancellation can never leave the group-commit lead unclaimed
        (an earlier thread-free hand-over could stall the log when a waiter was cancelled
        at the wrong moment).
        """
        return await asyncio.to_thread(self.append_many, records)

    def _enqueue(self, ticket: _Ticket) -> bool:
        """Queue ``ticket``; return True if the caller must lead the next group commit."""
        with self._cv:
            if self._closed:
                raise LedgerError("ledger is closed")
            self._pending.append(ticket)
            lead = not self._committing
            self._committing = True
        return lead

    @staticmethod
    def _result(ticket: _Ticket) -> list[int]:
        if ticket.error is not None:
            raise LedgerError("ledger append failed") from ticket.error
        return list(range(ticket.first, ticket.first + len(ticket.bodies)))

    def _lead(self, ticket: _Ticket) -> None:
        """Commit pending batches until ``ticket``'s is done, then hand the lead on."""
        while not ticket.done:
            with self._cv:
                batch, self._pending = self._take_batch()
            self._commit(batch)
            _wake([t for t in batch if t is not ticket])
        with self._cv:
            nxt = self._pending[0] if self._pending else None
            if nxt is None:
                self._committing = False
                self._cv.notify_all()
        if nxt is not None:
            _wake([nxt])

    def _take_batch(self) -> tuple[list[_Ticket], list[_Ticket]]:
        batch: list[_Ticket] = []
        count = 0
        for i, t in enumerate(self._pending):
            if batch and count + len(t.bodies) > MAX_BATCH:
                return batch, self._pending[i:]
            batch.append(t)
            count += len(t.bodies)
        return batch, []

    def _commit(self, batch: list[_Ticket]) -> None:
        try:
            self._tree = self._write(batch)
        except BaseException as exc:
            for t in batch:
                t.error = exc
            self._reload()
        for t in batch:
            t.done = True

    def _write(self, batch: list[_Ticket]) -> merkle.CompactRange:
        tree = self._tree.copy()
        first = tree.size
        leaves, hashes = [], []
        nodes: list[tuple[merkle.NodeID, bytes]] = []
        hash_leaf = merkle.hash_leaf
        for t in batch:
            t.first = tree.size
            for body in t.bodies:
                leaf = encode_leaf(tree.size, body)
                h = hash_leaf(leaf)
                leaves.append(leaf)
                hashes.append(h)
                tree.append(h, nodes)
        self.store.append(first, leaves, hashes, nodes)
        return tree

    def _reload(self) -> None:
        """Re-read the tree state after a failed commit (it may or may not have landed)."""
        try:
            size = self.store.size()
            ids = merkle.CompactRange.node_ids(size)
            self._tree = merkle.CompactRange(size, self.store.get_hashes(ids) if ids else [])
        except Exception:  # the store is unusable: refuse further appends
            self._closed = True

    def head(self) -> LedgerHead:
        """Return the current (committed) tree head."""
        tree = self._tree
        return LedgerHead(self.origin, tree.size, tree.root())

    @property
    def verifier(self) -> Verifier:
        """The log's note verifier (name = origin, type 0x01, public key)."""
        return _log_verifier(self.origin, self.signing_key)

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

    def leaves(self, start: int, end: int) -> list[bytes]:
        """Return the leaf bytes of entries ``[start, end)`` (clipped to the log)."""
        if not 0 <= start <= end:
            raise ValueError(f"need 0 <= start <= end, got {start} and {end}")
        return self.store.get_leaves(start, min(end, self._tree.size))

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

    def get_record(self, index: int) -> DataUseRecord:
        """Return the record at ``index``."""
        leaves = self.store.get_leaves(index, index + 1)
        if not leaves:
            raise ValueError(f"no entry {index} in a log of size {self._tree.size}")
        return decode_leaf(leaves[0])[1]

    def close(self) -> None:
        """Wait for in-flight commits, then close the store (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            while self._committing or self._pending:
                self._cv.wait()
        self.store.close()
