"""Appending to a ledger: records (with private parts) become tickets for the committer.

``append`` (threads) and ``append_async`` (asyncio) return once their entry is committed
and fsynced.  Both queue a :class:`audit.committer.Ticket` for the one committer thread,
which calls :meth:`LedgerAppends._write` with whatever is queued: one transaction for the
batch, so concurrent callers share an fsync (group commit).  A private part is committed to
here, in the record, by a salted hash (:mod:`audit.private`); its opening is stored beside
the leaf in the same transaction.  :class:`audit.ledger.Ledger` is the class to use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence

import audit.merkle as merkle
from audit.committer import Committer, Ticket
from audit.private import commitment, new_opening
from audit.records import DataUseRecord, encode_body, encode_leaf
from audit.store import LedgerStore

__all__ = ["LedgerAppends", "Private"]

#: The private part of one entry (``None``: the entry has none).
Private = Mapping[str, str] | None


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


class LedgerAppends:
    """The append methods of :class:`audit.ledger.Ledger`, and the write of a batch."""

    store: LedgerStore
    _tree: merkle.CompactRange
    _broken: bool  # the store became unusable: appends are refused
    _committer: Committer

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
