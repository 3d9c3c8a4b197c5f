"""The node's table of open multi-step jobs: bounded, expiring, per requester."""

from __future__ import annotations

import pytest

from datafed.wire.signing import RequestHeader
from nodes.errors import Unavailable
from nodes.limits import QuotaExceeded
from nodes.query.jobs import JobBinding, JobTable

BOUND = JobBinding("ab" * 32, ("water-north", "water-east", "water-south"), 3)


def header(requester: str = "alice", job: str = "job-1") -> RequestHeader:
    return RequestHeader(requester, "water-north", job, b"n" * 16, 0, 1, "planning", "law")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def test_stash_get_drop():
    table = JobTable()
    table.stash(header(), "pipes", "secagg", BOUND).put({"k": 1})
    job = table.get("alice", "job-1")
    assert job is not None and job.state == {"k": 1}
    assert (job.dataset, job.mode, job.purpose, job.legal_basis) == (
        "pipes",
        "secagg",
        "planning",
        "law",
    )
    assert (job.binding, job.roster, job.min_participants) == (
        BOUND.binding,
        BOUND.roster,
        3,
    )
    assert table.get("bob", "job-1") is None  # another requester never sees it
    assert job.run(lambda s: repr(s).encode()) == b"{'k': 1}"
    table.drop("alice", "job-1")
    assert table.get("alice", "job-1") is None and len(table) == 0


def test_one_state_per_job():
    table = JobTable()
    table.stash(header(), "pipes", "shares", BOUND).put(1)
    with pytest.raises(ValueError, match="already has protocol state"):
        table.stash(header(), "pipes", "shares", BOUND).put(2)
    table.stash(header("bob"), "pipes", "shares", BOUND).put(3)  # same job id, other requester
    assert table.get("alice", "job-1").state == 1 and len(table) == 2


def test_bounded_and_expiring():
    clock = Clock()
    table = JobTable(max_jobs=2, ttl_ms=100, clock=clock)
    table.stash(header(job="a"), "d", "ckks", BOUND).put(1)
    table.stash(header(job="b"), "d", "ckks", BOUND).put(2)
    with pytest.raises(Unavailable, match="holds 2 open protocol jobs; try again later"):
        table.stash(header("bob", job="c"), "d", "ckks", BOUND).put(3)
    clock.now += 100
    assert table.get("alice", "a") is None
    table.stash(header("bob", job="c"), "d", "ckks", BOUND).put(3)
    assert len(table) == 1
    with pytest.raises(ValueError, match="must be positive"):
        JobTable(max_jobs=0)


def test_one_requester_cannot_fill_the_table():
    """A requester holds at most per_requester open jobs; the others keep their room."""
    clock = Clock()
    table = JobTable(max_jobs=4, per_requester=2, ttl_ms=100, clock=clock)
    table.stash(header(job="a"), "d", "shares", BOUND).put(1)
    table.stash(header(job="b"), "d", "shares", BOUND).put(2)
    with pytest.raises(QuotaExceeded, match="alice already has 2 unfinished protocol jobs"):
        table.ensure_room("alice")
    with pytest.raises(QuotaExceeded, match="max_open_jobs_per_requester"):
        table.stash(header(job="c"), "d", "shares", BOUND).put(3)
    table.ensure_room("bob")
    table.stash(header("bob", job="a"), "d", "shares", BOUND).put(4)
    table.drop("alice", "a")  # a finished job frees its requester's room
    table.stash(header(job="c"), "d", "shares", BOUND).put(3)
    clock.now += 100  # and so does expiry
    table.ensure_room("alice")
    assert len(table) == 0
