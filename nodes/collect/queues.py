"""The queues of one task's database: Helper jobs for worker processes, and the outbox.

* ``helper_queue``: ``serve`` at a Helper queues each aggregation job it received
  (:func:`nodes.collect.helper.queue_job`); a worker claims one under a lease of database
  time, runs it and dequeues it once its answer is committed -- a worker killed meanwhile
  leaves the job to lease out and another takes it;
* ``outbox``: a worker or an upload front end holds no ledger; what it refused waits here
  until ``serve`` appends it to the node's ledger (:func:`nodes.collect.worker.drain_outbox`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from nodes.collect.windows import WindowStore

__all__ = ["QueueStore"]


class QueueStore(WindowStore):
    """The windows and meta (:class:`WindowStore`), the Helper's job queue and the outbox."""

    # -- Helper: the queue of jobs for worker processes --------------------------------------
    def enqueue_helper_job(self, job_id: bytes, request: bytes) -> None:
        """Leave a job for the Helper's workers (a job already queued stays as it is)."""
        with self._tx() as db:
            now = self.db.now_ms(db)
            db.execute(
                "INSERT INTO helper_queue VALUES (?, ?, '', 0, ?) ON CONFLICT (id) DO NOTHING",
                (job_id, request, now),
            )

    def claim_helper_job(self, owner: str, lease_ms: int) -> tuple[bytes, bytes] | None:
        """Take one queued job whose lease is free or ran out: ``(job_id, request)``."""
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self._tx() as db:
            now = self.db.now_ms(db)
            row = db.execute(
                "SELECT id, request FROM helper_queue WHERE lease_until_ms < ? "
                "ORDER BY created_ms LIMIT 1" + skip,
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE helper_queue SET owner = ?, lease_until_ms = ? WHERE id = ?",
                (owner, now + lease_ms, bytes(row[0])),
            )
        return bytes(row[0]), bytes(row[1])

    def dequeue_helper_job(self, job_id: bytes) -> None:
        """Forget a queued job whose answer is committed."""
        with self._tx() as db:
            db.execute("DELETE FROM helper_queue WHERE id = ?", (job_id,))

    # -- the outbox: refusals recorded away from the ledger's process -----------------------
    def outbox_put(self, record: dict[str, Any]) -> None:
        """Keep one refusal for ``serve`` to append to the ledger."""
        with self._tx() as db:
            db.execute("INSERT INTO outbox (record) VALUES (?)", (json.dumps(record),))

    def outbox_take(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """The oldest kept refusals ``(seq, record)``; :meth:`outbox_done` once ledgered."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT seq, record FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(s), json.loads(r)) for s, r in rows]

    def outbox_done(self, seqs: Sequence[int]) -> None:
        """Forget refusals the ledger now holds."""
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
