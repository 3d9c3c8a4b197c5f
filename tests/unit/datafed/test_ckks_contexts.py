"""The node's cache of analysts' CKKS public contexts: per requester, bounded, held per job."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from datafed.hazmat import HeContext, HeParams, HePublicContext
from datafed.modes._ckks_contexts import LOADED_FACTOR, CkksContextCache, ContextNeeded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ctx(tag: int) -> tuple[bytes, bytes]:
    body = f"context {tag} ".encode() * 100
    return body, hashlib.sha256(body).digest()


class Loads:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> object:
        self.calls += 1
        return ("loaded", raw)


def test_a_warm_job_names_the_digest_and_the_context_is_loaded_once():
    cache, load = CkksContextCache(), Loads()
    body, digest = ctx(1)
    cache.hold("alice", "j1", digest, len(body), body, until=60)
    with cache.use("alice", "j1", digest, load) as e:
        assert e.context == ("loaded", body)
    for job in ("j2", "j3"):  # later jobs send only the digest
        cache.hold("alice", job, digest, len(body), b"", until=60)
        with cache.use("alice", job, digest, load) as e:
            assert e.context == ("loaded", body)
    assert load.calls == 1
    assert cache.digests_of("alice") == [digest]
    assert cache.held_bytes == len(body) * LOADED_FACTOR


def test_an_unknown_digest_asks_for_the_context_and_a_wrong_body_is_refused():
    cache = CkksContextCache()
    body, digest = ctx(1)
    with pytest.raises(ContextNeeded, match="send the context"):
        cache.hold("alice", "j1", digest, len(body), b"", until=60)
    with pytest.raises(ValueError, match="does not match its digest"):
        cache.hold("alice", "j1", digest, len(body), body + b"x", until=60)
    with pytest.raises(ValueError, match="does not match its digest"):
        cache.hold("alice", "j1", digest, len(body) + 1, body, until=60)
    with pytest.raises(ValueError, match="SHA-256"):
        cache.hold("alice", "j1", digest[:16], len(body), body, until=60)
    cache.hold("alice", "j1", digest, len(body), body, until=60)
    with pytest.raises(ValueError, match="does not match its digest"):  # cached, wrong length
        cache.hold("alice", "j2", digest, len(body) + 1, b"", until=60)
    assert cache.digests_of("alice") == [digest]


def test_one_requester_cannot_use_another_requesters_context():
    cache, load = CkksContextCache(), Loads()
    body, digest = ctx(1)
    cache.hold("alice", "j1", digest, len(body), body, until=60)
    with pytest.raises(ContextNeeded):
        cache.hold("bob", "j1", digest, len(body), b"", until=60)
    with pytest.raises(ValueError, match="no longer held"):  # nor at encryption
        with cache.use("bob", "j1", digest, load):
            pass
    with cache.use("alice", "j1", digest, load):
        pass
    assert cache.digests_of("bob") == []


def test_the_bounds_evict_the_requesters_own_least_recently_used_context():
    clock = Clock()
    cache = CkksContextCache(per_requester=2, idle_s=100, clock=clock)
    (b1, d1), (b2, d2), (b3, d3) = ctx(1), ctx(2), ctx(3)
    for i, (b, d) in enumerate(((b1, d1), (b2, d2))):
        clock.now = i
        cache.hold("alice", f"a{i}", d, len(b), b, until=1000)
        with cache.use("alice", f"a{i}", d, Loads()):
            pass
    cache.hold("bob", "b0", d1, len(b1), b1, until=1000)
    with cache.use("bob", "b0", d1, Loads()):
        pass
    clock.now = 5
    cache.hold("alice", "a2", d3, len(b3), b3, until=1000)  # evicts alice's oldest (d1)
    assert cache.digests_of("alice") == [d2, d3]
    assert cache.digests_of("bob") == [d1]  # never another requester's
    with pytest.raises(ContextNeeded):
        cache.hold("alice", "a3", d1, len(b1), b"", until=1000)
    # One place, taken by alice: bob's context serves its one job uncached; alice's
    # idle past idle_s frees the place.
    tight = CkksContextCache(
        max_bytes=len(b1) * LOADED_FACTOR, idle_s=100, clock=clock, requesters=1
    )
    tight.hold("alice", "a0", d1, len(b1), b1, until=1000)
    with tight.use("alice", "a0", d1, Loads()):
        pass
    tight.hold("bob", "b0", d2, len(b2), b2, until=1000)
    assert tight.digests_of("bob") == []  # not cached ...
    with tight.use("bob", "b0", d2, Loads()) as e:  # ... but its job has it
        assert e.context == ("loaded", b2)
    clock.now = 200  # alice's idle past idle_s: it makes room
    tight.hold("bob", "b1", d2, len(b2), b2, until=1000)
    assert tight.digests_of("bob") == [d2] and tight.digests_of("alice") == []


def test_a_held_context_survives_eviction_until_its_job_uses_it():
    clock = Clock()
    cache = CkksContextCache(per_requester=1, clock=clock)
    (b1, d1), (b2, d2) = ctx(1), ctx(2)
    cache.hold("alice", "j1", d1, len(b1), b1, until=60)  # checked, not yet encrypted
    cache.hold("alice", "j2", d2, len(b2), b2, until=60)  # no room: j1's is held
    with cache.use("alice", "j1", d1, Loads()) as e:
        assert e.context == ("loaded", b1)
    with cache.use("alice", "j2", d2, Loads()) as e:
        assert e.context == ("loaded", b2)


def test_a_context_that_fails_to_load_is_dropped():
    cache = CkksContextCache()
    body, digest = ctx(1)
    cache.hold("alice", "j1", digest, len(body), body, until=60)

    def refuse(raw: bytes) -> object:
        raise ValueError("malformed CKKS public context")

    with pytest.raises(ValueError, match="malformed"):
        with cache.use("alice", "j1", digest, refuse):
            pass
    assert cache.digests_of("alice") == []
    with pytest.raises(ContextNeeded):
        cache.hold("alice", "j2", digest, len(body), b"", until=60)


def test_concurrent_jobs_of_one_analyst_share_a_loaded_context_correctly():
    """Eight threads encrypt under one cached TenSEAL context (its lock taken by use);
    every ciphertext decrypts to its own values."""
    secret = HeContext.generate(HeParams())
    raw = secret.public_bytes()
    digest = hashlib.sha256(raw).digest()
    cache, out = CkksContextCache(), {}
    for i in range(8):
        cache.hold("alice", f"j{i}", digest, len(raw), raw if i == 0 else b"", until=60)

    def job(i: int) -> None:
        x = np.arange(300, dtype=np.float64) * (i + 1)
        with cache.use("alice", f"j{i}", digest, HePublicContext.from_bytes) as e:
            out[i] = (x, e.context.encrypt(x).to_chunks())

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(8))
    for x, chunks in out.values():
        got = secret.decrypt(secret.vector_from_chunks(chunks, length=x.size))
        assert np.abs(got.values - x).max() <= got.error_bound


def test_holds_per_requester_are_bounded_and_expire():
    """At most 16 of one requester's jobs hold an uncached context; the oldest goes first,
    and an expired hold is dropped -- such a job then finds only the cache."""
    clock = Clock()
    cache = CkksContextCache(max_bytes=0, clock=clock)  # no room: every context is uncached
    body, digest = ctx(1)
    for i in range(17):
        cache.hold("alice", f"j{i}", digest, len(body), body, until=100 + i)
    cache.hold("bob", "b0", digest, len(body), body, until=50)
    with pytest.raises(ValueError, match="no longer held"):
        with cache.use("alice", "j0", digest, Loads()):
            pass
    with cache.use("alice", "j16", digest, Loads()):
        pass
    clock.now = 60  # bob's hold has expired; the next hold sweeps it
    cache.hold("alice", "j17", digest, len(body), body, until=200)
    with pytest.raises(ValueError, match="no longer held"):
        with cache.use("bob", "b0", digest, Loads()):
            pass


def test_whether_a_context_is_kept_depends_on_its_requesters_contexts_alone():
    """Red team round 4: with one byte budget for all, two colluders filling it learned
    whether a third analyst held a context. Each requester has an allowance of its own."""
    (b1, d1), (b2, d2), (b3, d3) = ctx(1), ctx(2), ctx(3)
    size = len(b1) * LOADED_FACTOR

    def kept(carol_active: bool) -> list[list[bytes]]:
        cache = CkksContextCache(max_bytes=3 * size, per_requester=2, requesters=3, clock=Clock())
        if carol_active:
            cache.hold("carol", "c0", d3, len(b3), b3, until=1000)
        for who, (b, d) in (("alice", (b1, d1)), ("bob", (b2, d2)), ("bob", (b3, d3))):
            cache.hold(who, f"{who}-{d.hex()}", d, len(b), b, until=1000)
        return [cache.digests_of(who) for who in ("alice", "bob")]

    alone = kept(False)
    assert alone == kept(True)
    assert alone[0] == [d1] and len(alone[1]) == 1  # bob's second exceeds his own allowance
    cache = CkksContextCache(max_bytes=size, requesters=2, clock=Clock())
    cache.hold("alice", "a0", d1, len(b1), b1, until=1000)
    assert cache.digests_of("alice") == []  # larger than one allowance: never cached
