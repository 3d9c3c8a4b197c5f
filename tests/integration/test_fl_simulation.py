"""Flower's simulation engine with 20 agencies, and the example's federated-vs-central check."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from datafed.fl import simulate
from datafed.fl.synthetic import flood_profiles

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flood_fl" / "compare.py"


def load_example():
    spec = importlib.util.spec_from_file_location("flood_fl_compare", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_twenty_agencies_in_the_simulation_engine():
    result = simulate(20, rounds=1, overrides={"eval-every": 0, "local-epochs": 1})
    names = sorted(p.name for p in flood_profiles(20))
    (only,) = result.rounds
    assert list(only.participants) == names and list(only.eval_participants) == names
    assert not only.failures and not only.mismatches
    assert result.nodes == {p.name: p.rows for p in flood_profiles(20)}
    assert only.num_examples == sum(p.rows for p in flood_profiles(20))
    assert result.accuracy is not None and result.accuracy > 0.6


def test_federated_model_comes_within_the_margin_of_central_training():
    example = load_example()
    c = example.compare(agencies=3, rounds=5, engine="direct")
    assert c.central_accuracy > 0.75  # the task is learnable at all
    assert c.gap <= example.MARGIN, c
