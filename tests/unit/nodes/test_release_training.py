"""Training's release functions: what leaves, what it costs, and no refusal on DP rows."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from datafed.fl.spec import DpParams, TrainingGrant, TrainingSpec
from nodes.config import DatasetPolicy, DpPolicy
from nodes.errors import InvalidRequest, PermissionDenied
from nodes.release.training import (
    clip_update,
    fit_weight,
    open_reply_rows,
    release_evaluation,
    release_update,
    round_cost,
    training_rows,
    update_sigma,
)

SPEC = TrainingSpec("people", ("age", "visits"), "sick", rounds=3)
DP = DpParams.local(0.5, 1e-5, 1.0)
EXACT = DatasetPolicy(min_group_size=3, person_level=False)
PRIVATE = DatasetPolicy(dp=DpPolicy(epsilon_per_query=0.5, budget_epsilon=5, budget_delta=1e-4))


class Store:
    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def read_rows(self, dataset: str, columns: object) -> list[tuple[object, ...]]:
        return self.rows


def test_exact_rows_are_refused_when_few_or_not_numbers() -> None:
    with pytest.raises(PermissionDenied, match="fewer than 3 rows"):
        training_rows(Store([(1, 2, 0)]), SPEC, EXACT)
    with pytest.raises(InvalidRequest, match="training column 'visits' of 'people' holds a NULL"):
        training_rows(Store([(1, 2, 0), (1, None, 1), (3, 4, 1)]), SPEC, EXACT)
    x, y = training_rows(Store([(1, 2, 0), (5, 6, 1), (3, 4, 1)]), SPEC, EXACT)
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 1]


def test_dp_rows_are_never_refused() -> None:
    spec = replace(SPEC, dp=DP)
    x, y = training_rows(
        Store([(1, 2, 0), (1, None, 1), ("x", 4, 1), (1, math.inf, 0)]), spec, PRIVATE
    )
    assert x.tolist() == [[1.0, 2.0]] and y.tolist() == [0.0]  # each bad row left out alone
    x, y = training_rows(Store([]), spec, PRIVATE)  # none at all: trained on all the same
    assert x.shape == (0, 2) and y.shape == (0,)


def test_an_update_is_clipped_then_noised_and_weighted_by_a_constant() -> None:
    received = [np.zeros((2, 3), np.float32), np.zeros(1, np.float32)]
    trained = [np.full((2, 3), 10.0, np.float32), np.array([np.nan], np.float32)]
    diffs = clip_update(received, trained, 1.0)
    assert math.isclose(math.sqrt(sum(float(np.sum(d * d)) for d in diffs)), 1.0)
    assert diffs[1].tolist() == [0.0]  # non-finite coordinates count as 0
    out = release_update(received, trained, DP, np.random.default_rng(0))
    assert [a.shape for a in out] == [(2, 3), (1,)] and all(a.dtype == np.float32 for a in out)
    assert update_sigma(DP) == pytest.approx(2 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5)
    assert fit_weight(DP, 917, 100_000) == 100_000 and fit_weight(DpParams(), 917, 1) == 917
    assert release_update(received, trained, DpParams())[0][0, 0] == 10.0  # no DP: as trained


def test_an_evaluation_releases_noisy_sums_within_their_ranges() -> None:
    out = release_evaluation([0.5, 9.0, np.nan], [True, False, True], 0.5, 2.0)
    assert 0.0 <= out.loss <= 2.0 and 0.0 <= out.accuracy <= 1.0 and out.num_examples >= 1
    with pytest.raises(ValueError, match="one loss and one correctness per row"):
        release_evaluation([0.5], [True, False], 0.5, 2.0)


def test_costs_refusals_and_the_open_reply() -> None:
    spec = replace(SPEC, dp=DP)
    assert round_cost(spec, "fit", PRIVATE) == (0.5, 1e-5)
    with pytest.raises(PermissionDenied, match="allow_evaluation"):
        round_cost(spec, "evaluate", PRIVATE)
    allowing = PRIVATE.model_copy(
        update={"dp": PRIVATE.dp.model_copy(update={"allow_evaluation": True})}
    )
    assert round_cost(spec, "evaluate", allowing) == (0.5, 0.0)
    assert round_cost(SPEC, "evaluate", EXACT) == (0.0, 0.0)
    grant = TrainingGrant("n", "j", spec, 917, "ab" * 32)
    assert open_reply_rows(grant) == {}
    assert open_reply_rows(replace(grant, spec=SPEC)) == {"num-rows": 917}
