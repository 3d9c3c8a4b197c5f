from __future__ import annotations

import pytest

from audit.usage import reconcile, summarize

from .conftest import make_record


def fl(node: str, rnd: int, model: str, **over: object) -> object:
    details = {"round": str(rnd), "phase": "fit", "model_in": model, "dp": "eps=1", "secagg": "yes"}
    details.update(over.pop("details", {}))  # type: ignore[arg-type]
    return make_record(
        0,
        node=node,
        requester="alice",
        job_id="fl-1",
        operation="fl_round",
        decision="released",
        epsilon=0.5,
        details=details,
        **over,
    )


def test_summarize_counts_and_epsilon() -> None:
    recs = [
        make_record(0, requester="a", decision="approved"),
        make_record(1, requester="a", decision="released", epsilon=0.25),
        make_record(2, requester="b", decision="denied", epsilon=9.0),
    ]
    rows = summarize(recs, "requester")
    # epsilon is what the entries carry, as the node's budget replays it (decision aside)
    assert [(r.key, r.entries, r.epsilon) for r in rows] == [("a", 2, 0.25), ("b", 1, 9.0)]
    assert rows[0].decisions["released"] == 1 and rows[1].decisions["denied"] == 1
    with pytest.raises(ValueError, match="cannot group by 'details'"):
        summarize(recs, "details")


def test_reconcile_ok_and_named_problems() -> None:
    good = {
        "a": [
            make_record(0, node="a", requester="alice", job_id="q1", decision="approved"),
            make_record(1, node="a", requester="alice", job_id="q1", decision="released"),
        ],
        "b": [make_record(2, node="b", requester="alice", job_id="q1", decision="approved")],
    }
    assert reconcile("q1", good) == []
    bad = dict(good, c=[make_record(3, node="c", requester="mallory", job_id="q1")])
    assert reconcile("q1", bad) == ["mismatch requester: nodes recorded 'alice', 'mallory'"]
    missing = dict(good, c=[make_record(3, node="c", job_id="other")])
    assert reconcile("q1", missing) == ["missing-at-node c: no record of job q1"]
    rogue = {"a": [make_record(0, node="a", requester="alice", job_id="q1", decision="released")]}
    assert reconcile("q1", rogue) == ["released-without-approval at a: job q1"]


def test_reconcile_fl_rounds() -> None:
    ok = {"a": [fl("a", 1, "m1"), fl("a", 2, "m2")], "b": [fl("b", 1, "m1"), fl("b", 2, "m2")]}
    assert reconcile("fl-1", ok) == [
        "released-without-approval at a: job fl-1",
        "released-without-approval at b: job fl-1",
    ]
    split = {"a": [fl("a", 1, "m1")], "b": [fl("b", 1, "EVIL", details={"dp": "off"})]}
    problems = reconcile("fl-1", split)
    assert "mismatch dp: nodes recorded 'eps=1', 'off'" in problems
    assert "mismatch round 1 fit model_in: EVIL, m1" in problems
