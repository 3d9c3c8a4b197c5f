"""The node's append-only data-use ledger: durable, group-committed, RFC 9162 Merkle log.

``append`` (threads) and ``append_async`` (asyncio) return once their entry is committed
and fsynced.  Both queue their entries for one committer thread (:mod:`audit.committer`)
that writes whatever is queued in one transaction, so concurrent callers share an fsync
(group commit).  An entry may carry a *private part* (:mod:`audit.private`): stored beside
the log in the same transaction, committed to in the leaf by a salted hash.  With
``sign_within_s`` the committer also signs a checkpoint within that delay of any append.

:class:`Ledger` opens a store (refusing one of another origin or key, or one rolled back
behind its own checkpoints), reads entries and closes; its append methods live in
:mod:`audit.ledger_append`, its checkpoints, proofs and receipts in :mod:`audit.ledger_proofs`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import audit.merkle as merkle
from audit.checkpoint import log_verifier as _log_verifier
from audit.checkpoint import open_checkpoint
from audit.committer import Committer
from audit.errors import LedgerError
from audit.ledger_append import LedgerAppends, Private
from audit.ledger_proofs import LedgerProofs
from audit.note import Verifier
from audit.private import decode_opening
from audit.records import DataUseRecord, decode_leaf
from audit.sqlite_store import SQLiteStore
from audit.store import LedgerStore

__all__ = ["Ledger", "LedgerHead", "Private", "check_origin"]


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


class Ledger(LedgerAppends, LedgerProofs):
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

    def head(self) -> LedgerHead:
        """Return the current (committed) tree head."""
        tree = self._tree
        return LedgerHead(self.origin, tree.size, tree.root())

    @property
    def verifier(self) -> Verifier:
        """The log's note verifier (name = origin, type 0x01, public key)."""
        return _log_verifier(self.origin, self.signing_key)

    def leaves(self, start: int, end: int) -> list[bytes]:
        """Return the leaf bytes of entries ``[start, end)`` (clipped to the log)."""
        if not 0 <= start <= end:
            raise ValueError(f"need 0 <= start <= end, got {start} and {end}")
        return self.store.get_leaves(start, min(end, self._tree.size))

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
