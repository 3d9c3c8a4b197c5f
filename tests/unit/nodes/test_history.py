"""The differencing defence of exact datasets: never an oracle, not flushable, atomic, shared."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nodes.policy.history import (
    CELLS,
    MAX_K,
    ReleasedGroup,
    ReleaseHistory,
    sketch,
    sketch_distance,
)

SECRET = bytes(range(32))


def ids(*ranges: range) -> np.ndarray:
    return np.unique(np.concatenate([np.arange(r.start, r.stop) for r in ranges]))


@pytest.fixture
def history(tmp_path):
    h = ReleaseHistory(tmp_path / "released.sqlite")
    yield h
    h.close()


@pytest.mark.parametrize("d", [0, 1, 2, 7, 20, 49])
def test_sketch_distance_is_exact_for_small_differences(d):
    rng = np.random.default_rng(d)
    s = np.unique(rng.integers(0, 10**9, 5000))
    t = np.setdiff1d(s, rng.choice(s, d, replace=False))
    t = np.union1d(t, np.arange(10**9 + 1, 10**9 + 1 + d // 2))  # some rows added too
    assert sketch_distance(sketch(s, SECRET), sketch(t, SECRET), SECRET) == d + d // 2


def test_far_apart_sets_do_not_decode():
    s, t = ids(range(0, 5000)), ids(range(2000, 7000))
    assert sketch_distance(sketch(s, SECRET), sketch(t, SECRET), SECRET) is None
    assert len(sketch(s, SECRET)) == CELLS


def test_the_sketch_is_keyed():
    s = ids(range(100))
    assert sketch(s, SECRET).tobytes() != sketch(s, bytes(32)).tobytes()


def test_near_duplicate_gets_the_earlier_values(history):
    s = ids(range(1, 1001))
    first = history.settle("d", 5, [ReleasedGroup(s, {"sum(x)": 100, "count(*)": 1000})])
    assert first == [{"sum(x)": 100, "count(*)": 1000}]
    probe = ids(range(1, 1001)).tolist()
    probe.remove(500)  # the victim row
    got = history.settle(
        "d", 5, [ReleasedGroup(np.asarray(probe), {"sum(x)": 97, "count(*)": 999})]
    )
    assert got == first  # the same numbers as if the victim's row were not filtered out
    far = ids(range(1, 900))
    fresh = history.settle("d", 5, [ReleasedGroup(far, {"sum(x)": 80, "count(*)": 899})])
    assert fresh == [{"sum(x)": 80, "count(*)": 899}]


def test_components_are_settled_one_by_one(history):
    s = ids(range(1, 201))
    history.settle("d", 5, [ReleasedGroup(s, {"sum(x)": 10})])
    t = np.setdiff1d(s, [7])
    got = history.settle("d", 5, [ReleasedGroup(t, {"sum(x)": 9, "count(*)": 199})])
    assert got == [{"sum(x)": 10, "count(*)": 199}]  # count was never released for S
    again = history.settle("d", 5, [ReleasedGroup(s, {"sum(x)": 10, "count(*)": 200})])
    assert again == [{"sum(x)": 10, "count(*)": 199}]  # S is near T's count release


def test_history_is_not_flushed_by_filler_releases(history):
    """The old guard kept 256 releases per requester; 300 fillers flushed it."""
    s = ids(range(1, 501))
    history.settle("d", 3, [ReleasedGroup(s, {"c": 500})])
    for i in range(300):
        history.settle(
            "d", 3, [ReleasedGroup(ids(range(10_000 * (i + 1), 10_000 * (i + 1) + 50)), {"c": 50})]
        )
    probe = np.setdiff1d(s, [250])
    assert history.settle("d", 3, [ReleasedGroup(probe, {"c": 499})]) == [{"c": 500}]
    assert len(history) == 301


def test_history_is_per_dataset(history):
    s = ids(range(1, 101))
    history.settle("a", 5, [ReleasedGroup(s, {"c": 100})])
    t = np.setdiff1d(s, [3])
    assert history.settle("b", 5, [ReleasedGroup(t, {"c": 99})]) == [{"c": 99}]


def test_concurrent_near_duplicates_are_settled_atomically(history):
    """S and S-minus-one from many threads: every answer is the first release's."""
    s = ids(range(1, 2001))
    results: list[dict[str, int]] = []
    lock = threading.Lock()

    def one(drop: int) -> None:
        group = ReleasedGroup(np.setdiff1d(s, [drop]) if drop else s, {"c": 2000 - bool(drop)})
        (got,) = history.settle("race", 5, [group])
        with lock:
            results.append(got)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["c"] for r in results}) == 1  # one fresh release, every other one its copy
    assert len(history) == 1


def test_k_above_the_sketch_limit_is_capped(history):
    s = ids(range(1, 5001))
    history.settle("d", 10_000, [ReleasedGroup(s, {"c": 5000})])
    near = np.setdiff1d(s, np.arange(1, MAX_K - 1))  # differs by MAX_K - 2 rows
    assert history.settle("d", 10_000, [ReleasedGroup(near, {"c": 1})]) == [{"c": 5000}]
