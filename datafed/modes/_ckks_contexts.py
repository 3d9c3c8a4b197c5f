"""Analysts' CKKS public contexts at a node: a cache per requester, keyed by digest.

A public context is 0.36-0.47 MB on the wire and loading one costs 8-15 ms; loaded it
takes about 16-19 times its serialized size in memory (SEAL's tables: measured 5.8 MB
for a 365 KB context, 8.6 MB for 465 KB). A client sends the context once to each node
and names it by its SHA-256 after (``CkksParams.public_context_digest``), so a warm query
neither sends nor parses it. :class:`CkksContextCache`:

- holds contexts per requester: an entry is found by ``(requester, digest)`` only, so
  one requester naming another's digest finds nothing (and is asked to send the context);
- holds at most ``per_requester`` contexts of one requester, in at most its own
  allowance of ``max_bytes / requesters`` (estimated: :data:`LOADED_FACTOR` x the
  serialized size): a new one evicts that requester's own least recently used idle
  contexts, never another requester's, so whether a requester's context is kept depends
  on what *it* sent and nothing else (red team round 4: a byte budget shared by all
  requesters told two colluding analysts whether a third held a context, and its size);
- holds contexts of at most ``requesters`` requesters at once, so the allowances never
  add up to more than ``max_bytes``; another requester's contexts idle longer than
  ``idle_s`` free its place. When every place is taken by requesters active within
  ``idle_s``, a new requester's context serves its one job and is dropped with it (the
  client then sends it with every query): that tells it no more than that ``requesters``
  others are active, and a node whose analysts are fewer than ``requesters`` never does
  it (``docs/policy.md#limits``);
- *holds* a context for a job from before admission (:meth:`CkksContextCache.hold`) to
  its encryption (:meth:`CkksContextCache.use`), so no eviction in between can make an
  admitted job fail; a held or used context is never evicted;
- loads a context once, on first use (after admission, in the job's compute thread: a
  garbage context fails there with the release's fixed text, as an inline one does), and
  lets one thread at a time use it (:attr:`Loaded.lock`): TenSEAL does not document its
  objects as safe to share between threads.

The node sets the limits from ``[limits]`` in ``node.toml`` (``docs/policy.md#limits``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONTEXT_CACHE", "LOADED_FACTOR", "CkksContextCache", "ContextNeeded", "Loaded"]

#: Memory of a loaded context per byte of its serialization (measured 15.9-18.5, above).
LOADED_FACTOR = 20
#: Most jobs of one requester holding a context between their check and encryption;
#: beyond it the oldest hold is dropped (that job then uses the cache as it stands).
_MAX_HOLDS = 16
DIGEST_BYTES = 32


class ContextNeeded(ValueError):
    """The node holds no context of this requester with this digest: send the context."""


@dataclass
class Loaded:
    """One cached context: its bytes until loaded, then the loaded context."""

    owner: str
    digest: bytes
    length: int
    raw: bytes | None
    used_at: float
    context: Any = None
    #: Guards loading and every use of the loaded context (one thread at a time).
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0

    @property
    def size(self) -> int:
        """Estimated memory once loaded."""
        return self.length * LOADED_FACTOR


class CkksContextCache:
    """Public contexts per requester, bounded in count and bytes (module docs).

    Parameters
    ----------
    max_bytes
        Most (estimated) bytes of contexts held in all.
    per_requester
        Most contexts held for one requester.
    requesters
        Most requesters holding contexts at once (each may use ``max_bytes / requesters``).
    idle_s
        Seconds after which an unused context may be dropped to make room.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        max_bytes: int = 256 << 20,
        per_requester: int = 2,
        idle_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        requesters: int = 8,
    ) -> None:
        self.clock = clock
        self._entries: dict[tuple[str, bytes], Loaded] = {}
        self._holds: dict[tuple[str, str], tuple[Loaded, float]] = {}
        self._lock = threading.Lock()
        self.configure(
            max_bytes=max_bytes, per_requester=per_requester, idle_s=idle_s, requesters=requesters
        )

    def configure(
        self, *, max_bytes: int, per_requester: int, idle_s: float, requesters: int = 8
    ) -> None:
        """Set the limits (a node does this once from ``[limits]``); ValueError if invalid."""
        if max_bytes < 0 or per_requester < 1 or idle_s <= 0 or requesters < 1:
            raise ValueError(
                "max_bytes >= 0, per_requester >= 1, requesters >= 1 and idle_s > 0 are required"
            )
        with self._lock:
            self.max_bytes, self.per_requester, self.idle_s = max_bytes, per_requester, idle_s
            self.requesters = requesters

    @property
    def allowance(self) -> int:
        """Estimated bytes one requester's contexts may take."""
        return self.max_bytes // self.requesters

    @property
    def held_bytes(self) -> int:
        """Estimated bytes of the cached contexts."""
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def digests_of(self, owner: str) -> list[bytes]:
        """The digests cached for ``owner`` (least recently used first)."""
        with self._lock:
            mine = sorted((e.used_at, d) for (o, d), e in self._entries.items() if o == owner)
        return [d for _, d in mine]

    def clear(self) -> None:
        """Forget every context not held or in use."""
        with self._lock:
            busy = {id(e) for e, _ in self._holds.values()}
            for k in [k for k, e in self._entries.items() if not e.users and id(e) not in busy]:
                del self._entries[k]

    def hold(
        self, owner: str, job_id: str, digest: bytes, length: int, body: bytes, until: float
    ) -> None:
        """Before admission: keep the context ``digest`` of ``owner`` for ``job_id``.

        ``body`` is the context when the request carried it (checked against ``digest``
        and ``length``, then cached if there is room); empty, the cached copy is used.
        The hold lasts until the job's :meth:`use` or the clock passes ``until``.

        Raises
        ------
        ContextNeeded
            No body and no cached context of ``owner`` with this digest.
        ValueError
            A body or length that does not match the digest.
        """
        if len(digest) != DIGEST_BYTES:
            raise ValueError("public_context_digest must be a SHA-256 digest (32 bytes)")
        if body and (len(body) != length or hashlib.sha256(body).digest() != digest):
            raise ValueError("the public context does not match its digest and length")
        with self._lock:
            now = self.clock()
            entry = self._entries.get((owner, digest))
            if entry is None:
                if not body:
                    raise ContextNeeded(
                        "this node holds no CKKS public context with that digest for you: "
                        "send the context with the query"
                    )
                entry = Loaded(owner, digest, length, body, now)
                if self._room(owner, entry.size, now):
                    self._entries[(owner, digest)] = entry
            elif entry.length != length:
                raise ValueError("the public context does not match its digest and length")
            entry.used_at = now
            self._holds = {k: h for k, h in self._holds.items() if h[1] > now}
            mine = sorted((u, k) for k, (_, u) in self._holds.items() if k[0] == owner)
            for _, k in mine[: max(0, len(mine) + 1 - _MAX_HOLDS)]:
                del self._holds[k]
            self._holds[(owner, job_id)] = (entry, until)

    @contextmanager
    def use(
        self, owner: str, job_id: str, digest: bytes, load: Callable[[bytes], Any]
    ) -> Iterator[Loaded]:
        """After admission: the job's context, loaded once with ``load``, its lock held.

        Raises
        ------
        ValueError
            The context is no longer held (see module docs), or ``load`` refused it.
        """
        entry = self._take(owner, job_id, digest)
        try:
            with entry.lock:
                if entry.context is None:
                    assert entry.raw is not None
                    try:
                        entry.context = load(entry.raw)
                    except ValueError:
                        self._drop(entry)  # refused contexts are not kept
                        raise
                    entry.raw = None
                yield entry
        finally:
            with self._lock:
                entry.users -= 1
                entry.used_at = self.clock()

    def _take(self, owner: str, job_id: str, digest: bytes) -> Loaded:
        with self._lock:
            held = self._holds.pop((owner, job_id), None)
            entry = held[0] if held and held[0].digest == digest else None
            entry = entry or self._entries.get((owner, digest))
            if entry is None:
                raise ValueError("the CKKS public context this job named is no longer held")
            entry.users += 1
            return entry

    def _drop(self, entry: Loaded) -> None:
        with self._lock:
            if self._entries.get((entry.owner, entry.digest)) is entry:
                del self._entries[(entry.owner, entry.digest)]

    def _room(self, owner: str, size: int, now: float) -> bool:
        """Make room for one more context of ``owner`` (lock held); False if there is none.

        Decided by ``owner``'s own contexts alone, but for its place among ``requesters``
        (module docs).
        """
        if size > self.allowance:
            return False
        busy = {id(e) for e, _ in self._holds.values() if _ > now}
        idle = {k for k, e in self._entries.items() if not e.users and id(e) not in busy}
        mine = sorted((e.used_at, k) for k, e in self._entries.items() if e.owner == owner)
        held, used = len(mine), sum(self._entries[k].size for _, k in mine)
        for _, k in mine:  # the requester's own idle contexts, least recently used first
            if held < self.per_requester and used + size <= self.allowance:
                break
            if k in idle:
                used -= self._entries.pop(k).size
                held -= 1
        if held >= self.per_requester or used + size > self.allowance:
            return False
        if held:
            return True
        for k in idle:  # another requester's context idle past idle_s frees its place
            if k in self._entries and now - self._entries[k].used_at > self.idle_s:
                del self._entries[k]
        return len({o for o, _ in self._entries}) < self.requesters


#: The node's one cache (configured by the node from ``[limits]``).
CONTEXT_CACHE = CkksContextCache()
