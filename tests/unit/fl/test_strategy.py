"""The audited strategy: delegates, tracks digests and participants, casts to float32."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as to_arrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from datafed.fl.digest import arrays_digest
from datafed.fl.strategies import make_strategy, weighted_average
from datafed.fl.strategy import (
    KEY_MODEL_IN,
    KEY_NODE,
    KEY_ROUND,
    KEY_UPDATE,
    ApprovedClientManager,
    AuditedStrategy,
)


class Proxy(ClientProxy):
    def __init__(self, node_id: int) -> None:
        super().__init__(str(node_id))
        self.node_id = node_id

    def get_properties(self, *a, **k):  # pragma: no cover - never called
        raise NotImplementedError

    get_parameters = fit = evaluate = reconnect = get_properties


INIT = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


def fit_res(value: float, n: int, node: str, model_in: str) -> FitRes:
    arrays = [np.full((2, 2), value, np.float64), np.full(2, value, np.float64)]
    metrics = {KEY_NODE: node, KEY_MODEL_IN: model_in, KEY_UPDATE: arrays_digest(arrays)}
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, metrics)


@pytest.fixture
def setup():
    manager = SimpleClientManager()
    proxies = [Proxy(i) for i in (11, 12, 13)]
    for p in proxies:
        manager.register(p)
    inner = make_strategy("fedavg", ndarrays_to_parameters(INIT), min_clients=2)
    return AuditedStrategy(inner, {11: "a", 12: "b", 13: "c"}, num_rounds=2, eval_every=0), manager


def test_round_is_tracked_and_aggregate_is_float32(setup):
    strat, manager = setup
    params = strat.initialize_parameters(manager)
    assert params is not None
    ins = strat.configure_fit(1, params, manager)
    digest = arrays_digest(INIT)
    assert {i.config[KEY_ROUND] for _, i in ins} == {1}
    assert {i.config[KEY_MODEL_IN] for _, i in ins} == {digest}
    by_id = {p.node_id: p for p, _ in ins}
    results = [
        (by_id[11], fit_res(1.0, 10, "a", digest)),
        (by_id[12], fit_res(4.0, 30, "b", "f" * 64)),  # claims another global model
    ]
    agg, _ = strat.aggregate_fit(1, results, [RuntimeError("node 13 dropped")])
    assert agg is not None
    arrays = to_arrays(agg)
    assert all(a.dtype == np.float32 for a in arrays)
    np.testing.assert_allclose(arrays[0], np.full((2, 2), 3.25))  # (10*1 + 30*4) / 40
    log = strat.rounds[1]
    assert log.participants == ["a", "b"] and log.num_examples == 40
    assert log.mismatches == ["b"] and log.failures == ["node 13 dropped"]
    assert log.model_in == digest and log.model_out == arrays_digest(arrays)
    # Round 1 is not an evaluation round (eval_every=0, 2 rounds); round 2 is, for its
    # contributors only.
    assert strat.configure_evaluate(1, agg, manager) == []
    strat.aggregate_fit(2, results[:1], [])
    assert {p.node_id for p, _ in strat.configure_evaluate(2, agg, manager)} == {11}


def test_approved_client_manager_keeps_others_out():
    m = ApprovedClientManager({1, 2})
    assert all(m.register(Proxy(i)) for i in (1, 2, 3))
    assert sorted(m.all()) == ["1", "2"]


def test_strategy_names():
    init: Parameters = ndarrays_to_parameters(INIT)
    assert type(make_strategy("FedAdam", init, 2)).__name__ == "FedAdam"
    with pytest.raises(ValueError, match="unknown strategy 'fedfoo'"):
        make_strategy("fedfoo", init, 2)
    with pytest.raises(ValueError, match="cannot load strategy factory"):
        make_strategy("no_such_module:f", init, 2)
    with pytest.raises(ValueError, match="returned dict, not a Strategy"):
        make_strategy("builtins:dict", init, 2)


def test_weighted_average_skips_datafed_keys():
    got = weighted_average([(1, {"accuracy": 1.0, KEY_NODE: "a"}), (3, {"accuracy": 0.0})])
    assert got == {"accuracy": 0.25}
