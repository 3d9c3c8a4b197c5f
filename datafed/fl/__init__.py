"""Federated learning on Flower: the analyst's ServerApp, strategies, SecAgg+ and DP wiring.

The analyst's entry points are :func:`train` (a real federation: SuperLink and SuperNodes
over TLS) and :func:`simulate` (Flower's simulation engine, many synthetic agencies);
:func:`model_lineage` traces a model's digest through the nodes' ledgers. Importing this
package loads neither torch nor Flower; the functions load them when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datafed.fl.errors import LineageError, TrainingError, TrainingFailed, TrainingRefused
from datafed.fl.progress import Progress
from datafed.fl.result import RoundSummary, TrainResult
from datafed.fl.spec import DpParams, TrainingSpec

if TYPE_CHECKING:
    from datafed.fl.lineage import Lineage, model_lineage
    from datafed.fl.simulation import simulate
    from datafed.fl.training import train

__all__ = [
    "DpParams",
    "Lineage",
    "LineageError",
    "Progress",
    "RoundSummary",
    "TrainResult",
    "TrainingError",
    "TrainingFailed",
    "TrainingRefused",
    "TrainingSpec",
    "model_lineage",
    "simulate",
    "train",
]

_LAZY = {
    "train": "datafed.fl.training",
    "simulate": "datafed.fl.simulation",
    "model_lineage": "datafed.fl.lineage",
    "Lineage": "datafed.fl.lineage",
}


def __getattr__(name: str) -> Any:
    """Load :func:`train`, :func:`simulate` and the lineage helpers on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
