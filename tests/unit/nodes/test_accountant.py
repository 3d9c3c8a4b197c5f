"""The node's one accountant in (epsilon, delta): charges, limits, replay from the ledger."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from audit.records import DataUseRecord, encode_body, encode_leaf
from datafed.pki.ca import Identity
from datafed.wire.signing import new_header
from nodes.config import DpPolicy
from nodes.errors import BudgetExhausted
from nodes.policy import PolicyEngine, Use
from nodes.policy.budget import LedgerBudget, delta_details, recorded_delta

from .test_collect_node import NODE, load

GAUSSIAN = NODE.replace(
    "epsilon = 0.5\nbudget_epsilon = 1.0\n",
    'mechanism = "gaussian"\nrho = 0.01\ndelta = 1e-6\nbudget_epsilon = 10.0\n'
    "budget_delta = 2.5e-6\n",
)


def test_epsilons_and_deltas_add_up_and_either_exhausts_the_budget() -> None:
    budget = LedgerBudget(lambda ds: (1.0, 1e-4), lambda ds: True)
    budget.charge("alice", "people", 0.5, 6e-5)
    assert budget.spent_both("bob", "people") == (0.5, 6e-5)  # one budget for everyone
    with pytest.raises(BudgetExhausted, match=r"delta=6e-05; left 0.5, 4e-05"):
        budget.check("bob", "people", 0.1, 6e-5)  # epsilon fits, delta does not
    with pytest.raises(BudgetExhausted):
        budget.charge("alice", "people", 0.6)
    budget.charge("alice", "people", 0.5, 4e-5)
    assert budget.spent_both("alice", "people") == (1.0, 1e-4)
    with pytest.raises(ValueError, match="positive epsilon"):
        budget.charge("alice", "people", 0.0, 1e-6)


def test_delta_is_recorded_in_details_and_read_back() -> None:
    assert delta_details(0.0) == {} and delta_details(1e-5) == {"delta": "1e-05"}
    assert recorded_delta({"delta": "1e-05"}) == 1e-5 and recorded_delta({}) == 0.0
    assert recorded_delta({"delta": "lots"}) == float("inf")  # an edited ledger


def test_dp_policy_bounds_delta_per_job() -> None:
    base = {"epsilon_per_query": 0.5, "budget_epsilon": 5.0}
    assert DpPolicy(**base).delta_per_job == 0.0  # no delta budget: no Gaussian noise
    assert DpPolicy(**base, budget_delta=1e-4).delta_per_job == 1e-4
    assert DpPolicy(**base, budget_delta=1e-4, max_delta_per_job=1e-5).delta_per_job == 1e-5
    with pytest.raises(ValidationError, match="max_delta_per_job must not exceed"):
        DpPolicy(**base, budget_delta=1e-5, max_delta_per_job=1e-4)
    assert not DpPolicy(**base).allow_evaluation  # evaluation is refused by default


class Leaves:
    """The two methods of a ledger the engine's replay reads."""

    def __init__(self, records: list[DataUseRecord]) -> None:
        self._leaves = [encode_leaf(i, encode_body(r)) for i, r in enumerate(records)]

    def head(self) -> SimpleNamespace:
        return SimpleNamespace(size=len(self._leaves))

    def leaves(self, start: int, end: int) -> list[bytes]:
        return self._leaves[start:end]


def _record(job: str, epsilon: float, details: dict[str, str]) -> DataUseRecord:
    return DataUseRecord(
        "water-north", "alice", "analyst", "water-use", "consumption", "", "collect",
        "prio3", "", "", "approved", "policy", epsilon, job, 1, details,
    )  # fmt: skip


def _use(who: Identity) -> Use:
    header = new_header(who.name, "water-north", f"job-{time.monotonic_ns()}", "consumption")
    return Use("collect", who, header, "water-use", protection="prio3", epsilon=1.0, delta=1e-6)


def test_gaussian_releases_charge_delta_and_a_restart_replays_it(tmp_path: Path, pki_dir) -> None:
    from datafed.pki.ca import identity_from_pem, party_paths

    alice = identity_from_pem(party_paths(pki_dir, "analyst", "alice").cert.read_bytes())
    entries: list[dict[str, object]] = []

    async def record(**kw: object) -> int:
        entries.append(kw)
        return len(entries) - 1

    engine = PolicyEngine(load(tmp_path, GAUSSIAN), {}, "water-north", b"")

    async def admit() -> None:
        for _ in range(2):  # the delta budget 2.5e-6 holds two releases of 1e-6
            grant = await engine.admit(_use(alice), record)
            assert (grant.epsilon, grant.delta) == (1.0, 1e-6)
        with pytest.raises(BudgetExhausted, match="delta"):
            await engine.admit(_use(alice), record)

    asyncio.run(admit())
    assert [e["details"]["delta"] for e in entries] == ["1e-06", "1e-06"]  # type: ignore[index]
    # a restart replays the two approvals' epsilon and delta from the ledger
    again = PolicyEngine(load(tmp_path, GAUSSIAN), {}, "water-north", b"")
    ledger = Leaves(
        [_record(f"j{i}", 1.0, e["details"]) for i, e in enumerate(entries)]  # type: ignore[arg-type]
    )
    again.replay(ledger)  # type: ignore[arg-type]
    assert again.budget.spent_both("alice", "water-use") == (2.0, 2e-6)
    with pytest.raises(BudgetExhausted):
        again.budget.check("alice", "water-use", 1.0, 1e-6)
    # an entry whose delta was edited into nonsense leaves its budget exhausted
    edited = PolicyEngine(load(tmp_path, GAUSSIAN), {}, "water-north", b"")
    edited.replay(Leaves([_record("j", 1.0, {"delta": "x"})]))  # type: ignore[arg-type]
    with pytest.raises(BudgetExhausted):
        edited.budget.check("alice", "water-use", 1.0, 0.0)
