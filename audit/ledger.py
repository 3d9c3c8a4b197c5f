"""The node's append-only data-use ledger: durable, group-committed, RFC 9162 Merkle log.

``append`` (threads) and ``append_async`` (asyncio) return once their entry is committed
and fsynced.  Both queue their entries for one committer thread (:mod:`audit.committer`)
that writes whatever is queued in one transaction, so concurrent callers share an fsync
(group commit).  An entry may carry a *private part* (:mod:`audit.private`): stored beside
the log in the same transaction, committed to in the leaf by a salted hash.  With
``sign_within_s`` the committer also signs a checkpoint within that delay of any append.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import audit.merkle as merkle
from audit.checkpoint import Checkpoint, add_signatures, open_checkpoint, sign_checkpoint
from audit.checkpoint import log_verifier as _log_verifier
from audit.committer import Committer, Ticket
from audit.errors import LedgerError
from audit.note import NoteSignature, Verifier
from audit.private import commitment, decode_opening, new_opening
from audit.receipts import MAX_RECEIPT_ENTRIES, Receipt, ReceiptEntry
from audit.records import DataUseRecord, decode_leaf, encode_body, encode_leaf
from audit.sqlite_store import SQLiteStore
from audit.store import LedgerStore

__all__ = ["Ledger", "LedgerHead", "Private", "check_origin"]

#: The private part of one entry (``None``: the entry has none).
Private = Mapping[str, str] | None


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


def _check(record: object) -> DataUseRecord:
    if not isinstance(record, DataUseRecord):
        raise TypeError(f"expected DataUseRecord, got {type(record).__name__}")
    if record.private_commitment:
        raise ValueError("private_commitment is set by the ledger; pass private= instead")
    return record


def _ticket(records: Sequence[DataUseRecord], private: Sequence[Private] | None) -> Ticket:
    """Validate and encode ``records`` with their private parts (committed here)."""
    if private is None or not any(p is not None for p in private):
        bodies = [encode_body(_check(r)) for r in records]
        if private is not None and len(private) != len(bodies):
            raise ValueError(f"got {len(private)} private parts for {len(bodies)} records")
        return Ticket(bodies, [None] * len(bodies))
    records, parts = list(records), list(private)
    if len(parts) != len(records):
        raise ValueError(f"got {len(parts)} private parts for {len(records)} records")
    bodies, openings = [], []
    for r, p in zip(records, parts, strict=True):
        opening = None if p is None else new_opening(p)
        r = _check(r)
        if opening is not None:
            r = dataclasses.replace(r, private_commitment=commitment(opening))
        bodies.append(encode_body(r))
        openings.append(opening)
    return Ticket(bodies, openings)


class Ledger:
    """One node's ledger; open it with :meth:`Ledger.open`."""

    def __init__(
        self,
        store: LedgerStore,
        origin: str,
        signing_key: Ed25519PrivateKey,
        *,
        sign_within_s: float | None = None,
    ) -> None:
        self.store = store
        self.origin = origin
        self.signing_key = signing_key
        self._broken = False  # the store became unusable: appends are refused
        self._shut = False
        self._close_lock = threading.Lock()
        self._cp_lock = threading.Lock()
        self._tree = merkle.CompactRange()
        self._reload()
        if self._broken:
            raise LedgerError("ledger store is unreadable")
        self._latest_cp = self._check_checkpoints()
        signed = self._latest_cp[0] if self._latest_cp else 0
        self._committer = Committer(
            self._write, self.checkpoint, sign_within_s, unsigned=self._tree.size > signed
        )

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
    def open(
        cls,
        path: Path,
        origin: str,
        signing_key: Ed25519PrivateKey,
        *,
        sign_within_s: float | None = None,
    ) -> Ledger:
        """Open (or create) the ledger at ``path`` for log ``origin`` signed by ``signing_key``.

        Parameters
        ----------
        path : Path
            The SQLite file.
        origin : str
            The log's origin (checkpoint first line, note key name).
        signing_key : Ed25519PrivateKey
            The log's key.
        sign_within_s : float, optional
            Sign a checkpoint at most this many seconds after any append (and at close);
            by default checkpoints are signed only when asked for.

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
            return cls(store, origin, signing_key, sign_within_s=sign_within_s)
        except BaseException:
            store.close()
            raise

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key of the log."""
        return self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def append(self, record: DataUseRecord, private: Private = None) -> int:
        """Append one record (with an optional private part); return its index once durable.

        Parameters
        ----------
        record : DataUseRecord
            The record; its ``private_commitment`` must be empty (the ledger sets it).
        private : Mapping[str, str], optional
            Details for auditors only (per-node counts, sizes): stored beside the log in
            the same transaction; the leaf carries only a salted commitment to them.
        """
        return self.append_many([record], [private])[0]

    def append_many(
        self, records: Sequence[DataUseRecord], private: Sequence[Private] | None = None
    ) -> list[int]:
        """Append records atomically (one commit); return their indexes, in order.

        ``private``, if given, holds one private part (or ``None``) per record.
        """
        ticket = _ticket(records, private)
        if not ticket.bodies:
            return []
        gate = threading.Lock()
        gate.acquire()
        ticket.gate = gate
        self._committer.submit(ticket)
        gate.acquire()  # released by the committer once the batch is durable (or failed)
        return ticket.result()

    async def append_async(self, record: DataUseRecord, private: Private = None) -> int:
        """Like :meth:`append` for asyncio callers (see :meth:`append_many_async`)."""
        if private is None:  # the hot path of a node: one record, no private part
            ticket = Ticket([encode_body(_check(record))], [None])
        else:
            ticket = _ticket([record], [private])
        return (await self._queue_async(ticket))[0]

    async def append_many_async(
        self, records: Sequence[DataUseRecord], private: Sequence[Private] | None = None
    ) -> list[int]:
        """Like :meth:`append_many` for asyncio callers, without a thread per call.

        The entries are queued before the first suspension point; the committer thread
        completes the future from its own thread (``call_soon_threadsafe``).  If the caller
        is cancelled while waiting, its entries are still committed: durable, and
        acknowledged to nobody.  A cancellation never stalls the log.
        """
        ticket = _ticket(records, private)
        if not ticket.bodies:
            return []
        return await self._queue_async(ticket)

    def _queue_async(self, ticket: Ticket) -> asyncio.Future[list[int]]:
        """Queue ``ticket`` now (before any suspension) and return the future to await."""
        loop = asyncio.get_running_loop()
        ticket.loop = loop
        ticket.future = fut = loop.create_future()
        self._committer.submit(ticket)
        return fut

    def _write(self, batch: list[Ticket]) -> bool:
        """Write one batch (committer thread); return False if the store became unusable."""
        try:
            self._tree = self._extend(batch)
        except BaseException as exc:
            for t in batch:
                t.error = exc
            self._reload()
        return not self._broken

    def _extend(self, batch: list[Ticket]) -> merkle.CompactRange:
        tree = self._tree.copy()
        first = tree.size
        leaves, hashes = [], []
        nodes: list[tuple[merkle.NodeID, bytes]] = []
        private: list[tuple[int, bytes]] = []
        hash_leaf = merkle.hash_leaf
        for t in batch:
            t.first = tree.size
            for body, opening in zip(t.bodies, t.openings, strict=True):
                if opening is not None:
                    private.append((tree.size, opening))
                leaf = encode_leaf(tree.size, body)
                h = hash_leaf(leaf)
                leaves.append(leaf)
                hashes.append(h)
                tree.append(h, nodes)
        self.store.append(first, leaves, hashes, nodes, private)
        return tree

    def _reload(self) -> None:
        """Re-read the tree state after a failed commit (it may or may not have landed)."""
        try:
            size = self.store.size()
            ids = merkle.CompactRange.node_ids(size)
            self._tree = merkle.CompactRange(size, self.store.get_hashes(ids) if ids else [])
        except Exception:  # the store is unusable: refuse further appends
            self._broken = True

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

    def private_parts(self, start: int, end: int) -> dict[int, bytes]:
        """Return the stored private-part openings of entries ``[start, end)`` by index.

        An opening is ``salt || canonical map`` (:mod:`audit.private`); only auditors and
        witnesses may receive it.
        """
        if not 0 <= start <= end:
            raise ValueError(f"need 0 <= start <= end, got {start} and {end}")
        return self.store.get_private(start, min(end, self._tree.size))

    def get_private(self, index: int) -> dict[str, str] | None:
        """Return the private part of entry ``index`` (``None`` if it has none)."""
        opening = self.private_parts(index, index + 1).get(index)
        return None if opening is None else decode_opening(opening)[1]

    def get_record(self, index: int) -> DataUseRecord:
        """Return the record at ``index``."""
        leaves = self.store.get_leaves(index, index + 1)
        if not leaves:
            raise ValueError(f"no entry {index} in a log of size {self._tree.size}")
        return decode_leaf(leaves[0])[1]

    def close(self) -> None:
        """Commit queued entries, sign a last checkpoint if due, close the store (idempotent)."""
        with self._close_lock:
            if self._shut:
                return
            self._shut = True
            self._committer.close()
            self.store.close()
