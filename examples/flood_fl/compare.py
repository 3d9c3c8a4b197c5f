"""Flood-risk model across district flood offices: federated (Flower) vs. central training.

Three district flood offices hold seeded synthetic sensor readings split unevenly
(non-IID: a low tidal coastal district with many readings, a riverside district, a
sparse upland district that rarely floods). The federated model is trained with
datafed's Flower ServerApp and ClientApp -- FedAvg under SecAgg+ -- without any office
sharing a row; the central model is the same network trained on the union of the rows,
as if the data had been pooled. Both are scored on the same held-out readings drawn
from every district. The federated model should come within ``MARGIN`` accuracy of the
central one.

    python examples/flood_fl/compare.py                     # Flower simulation engine
    python examples/flood_fl/compare.py --engine direct     # in-process message delivery
    python examples/flood_fl/compare.py --agencies 20 --rounds 5
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from datafed.fl.model import (
    LocalTraining,
    build_model,
    evaluate_model,
    get_weights,
    set_weights,
    train_model,
)
from datafed.fl.result import TrainResult
from datafed.fl.settings import RunSettings
from datafed.fl.synthetic import flood_holdout, flood_profiles, flood_readings

#: How close (absolute held-out accuracy) the federated model must come to the central one.
MARGIN = 0.05


@dataclass(frozen=True)
class Comparison:
    """Held-out accuracy and loss of both models."""

    central_accuracy: float
    central_loss: float
    federated_accuracy: float
    federated_loss: float
    rounds: int
    agencies: int

    @property
    def gap(self) -> float:
        """How much accuracy federation costs (negative: it did better)."""
        return self.central_accuracy - self.federated_accuracy


def settings_for(agencies: int, rounds: int, seed: int, epochs: int) -> RunSettings:
    """Run settings: the synthetic agencies, FedAvg under SecAgg+, final evaluation only."""
    return RunSettings(
        num_server_rounds=rounds,
        min_nodes=agencies,
        sim_data=f"flood:{seed}",
        seed=seed,
        local_epochs=epochs,
        eval_every=0,
    )


def federated(settings: RunSettings, agencies: int, engine: str) -> TrainResult:
    """Train with datafed's ServerApp and ClientApp on ``engine`` (simulation or direct)."""
    from nodes.fl.client_app import app  # the agencies' ClientApp, injected below

    if engine == "simulation":
        from datafed.fl.simulation import simulate_settings

        return simulate_settings(settings, agencies, app)
    from flwr.app import Context, RecordDict

    from datafed.fl.direct import DirectGrid
    from datafed.fl.result import check_result
    from datafed.fl.server_app import run_job

    cfg = settings.to_run_config()
    parts = [{"partition-id": i, "num-partitions": agencies} for i in range(agencies)]
    grid = DirectGrid(app, parts, cfg, run_id=settings.seed + 1)
    return check_result(run_job(grid, Context(grid.run.run_id, 0, {}, RecordDict(), cfg), settings))


def compare(
    agencies: int = 3, rounds: int = 5, seed: int = 7, engine: str = "simulation", epochs: int = 2
) -> Comparison:
    """Train both ways and score both on the same held-out readings."""
    profiles = flood_profiles(agencies, seed)
    parts = [flood_readings(p, seed, i) for i, p in enumerate(profiles)]
    x_test, y_test = flood_holdout(profiles, seed=seed)
    settings = settings_for(agencies, rounds, seed, epochs)

    central = build_model(x_test.shape[1], settings.model, settings.seed)
    x_all = np.concatenate([x for x, _ in parts])
    y_all = np.concatenate([y for _, y in parts])
    cfg = LocalTraining(settings.local_epochs, settings.batch_size, settings.lr)
    for r in range(rounds):  # the same number of passes over the data as the federation
        train_model(central, x_all, y_all, cfg, seed=settings.seed + r)
    c_loss, c_acc = evaluate_model(central, x_test, y_test)

    result = federated(settings, agencies, engine)
    fed_net = build_model(x_test.shape[1], settings.model)
    set_weights(fed_net, result.weights)
    assert [w.tolist() for w in get_weights(fed_net)] == [w.tolist() for w in result.weights]
    f_loss, f_acc = evaluate_model(fed_net, x_test, y_test)
    return Comparison(c_acc, c_loss, f_acc, f_loss, rounds, agencies)


def main() -> None:
    """Command line: print both scores and whether federation is within the margin."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agencies", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--engine", choices=("simulation", "direct"), default="simulation")
    args = ap.parse_args()
    c = compare(args.agencies, args.rounds, args.seed, args.engine)
    print(f"central   (pooled rows):  accuracy {c.central_accuracy:.3f}, loss {c.central_loss:.3f}")
    print(
        f"federated (SecAgg+ FedAvg): accuracy {c.federated_accuracy:.3f}, loss {c.federated_loss:.3f}"
    )
    verdict = "within" if c.gap <= MARGIN else "NOT within"
    print(f"gap {c.gap:+.3f}: {verdict} the {MARGIN} margin")


if __name__ == "__main__":
    main()
