"""Choosing the Flower strategy of a job by name: FedAvg by default, any strategy allowed.

``strategy`` in the run config is one of the built-in names below, or
``"package.module:factory"`` naming an installed callable
``factory(initial_parameters=..., min_clients=...) -> flwr.server.strategy.Strategy``.

Under SecAgg+ the server only ever holds the *sum* of the updates, so strategies that
look at individual updates (median, trimmed mean, Krum) degenerate to the mean there;
server-side optimisers (FedAdam, FedYogi, FedAdagrad, FedAvgM) work as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flwr.common import Metrics, Parameters
from flwr.server import strategy as flwr_strategy
from flwr.server.strategy import Strategy

__all__ = ["BUILTIN", "make_strategy", "weighted_average"]


def weighted_average(metrics: list[tuple[int, Metrics]]) -> Metrics:
    """Average each numeric metric over nodes, weighted by their number of examples."""
    total = sum(n for n, _ in metrics)
    if total == 0:
        return {}
    keys = {k for _, m in metrics for k, v in m.items() if isinstance(v, (int, float))}
    keys = {k for k in keys if not k.startswith("datafed-")}
    return {
        k: sum(n * float(m[k]) for n, m in metrics if isinstance(m.get(k), (int, float))) / total
        for k in sorted(keys)
    }


def _no_fit_metrics(metrics: list[tuple[int, Metrics]]) -> Metrics:
    return {}


def _common(initial: Parameters, min_clients: int) -> dict[str, Any]:
    return {
        "fraction_fit": 1.0,
        "fraction_evaluate": 1.0,
        "min_fit_clients": min_clients,
        "min_evaluate_clients": min_clients,
        "min_available_clients": min_clients,
        "initial_parameters": initial,
        "fit_metrics_aggregation_fn": _no_fit_metrics,
        "evaluate_metrics_aggregation_fn": weighted_average,
    }


BUILTIN: dict[str, Callable[..., Strategy]] = {
    "fedavg": lambda **kw: flwr_strategy.FedAvg(**kw),
    "fedavgm": lambda **kw: flwr_strategy.FedAvgM(server_momentum=0.5, **kw),
    "fedadam": lambda **kw: flwr_strategy.FedAdam(eta=0.05, **kw),
    "fedyogi": lambda **kw: flwr_strategy.FedYogi(eta=0.05, **kw),
    "fedadagrad": lambda **kw: flwr_strategy.FedAdagrad(eta=0.05, **kw),
    "fedmedian": lambda **kw: flwr_strategy.FedMedian(**kw),
    "fedtrimmedavg": lambda **kw: flwr_strategy.FedTrimmedAvg(beta=0.1, **kw),
}


def make_strategy(name: str, initial: Parameters, min_clients: int) -> Strategy:
    """Build the strategy called ``name`` starting from ``initial``.

    Raises
    ------
    ValueError
        If ``name`` is neither built in nor ``module:factory``, or the factory does not
        return a Flower strategy.
    """
    if min_clients < 1:
        raise ValueError(f"min_clients must be at least 1, got {min_clients}")
    key = name.strip().lower()
    if key in BUILTIN:
        return BUILTIN[key](**_common(initial, min_clients))
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"unknown strategy {name!r}: use one of {', '.join(sorted(BUILTIN))} "
            "or 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load strategy factory {name!r}: {exc}") from exc
    made = factory(initial_parameters=initial, min_clients=min_clients)
    if not isinstance(made, Strategy):
        raise ValueError(
            f"strategy factory {name!r} returned {type(made).__name__}, not a Strategy"
        )
    return made
