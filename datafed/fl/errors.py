"""Errors of federated training (the analyst's side of Flower).

Hierarchy::

    DatafedError                      (datafed.errors)
    └── TrainingError                 a training job could not run to its end
        ├── TrainingRefused           one or more nodes refused the job (names each node,
        │                             its status code and reason, e.g. PERMISSION_DENIED)
        └── TrainingFailed            the Flower run failed or ended without a result

    (LineageError, raised when ledger records do not support a claimed lineage, is
    audit.errors.LineageError, re-exported here.)

Errors from Flower, gRPC or the ``flwr`` CLI are translated at the boundary with
``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping

from audit.errors import ExitCode, LineageError
from datafed.errors import DatafedError

__all__ = ["LineageError", "TrainingError", "TrainingFailed", "TrainingRefused"]


class TrainingError(DatafedError):
    """A federated training job could not run to its end."""


class TrainingRefused(TrainingError):
    """Nodes refused the training job.

    Parameters
    ----------
    refusals : Mapping[str, str]
        Node name -> ``"<STATUS_CODE>: <reason>"`` as the node stated it.
    before_run : bool
        The refusal comes from the nodes' published policies, before any Flower run.

    Exit code 3 (a node refused), as docs/cli.md lists.
    """

    exit_code = ExitCode.REFUSED

    def __init__(self, refusals: Mapping[str, str], *, before_run: bool = False) -> None:
        self.refusals = dict(sorted(refusals.items()))
        self.before_run = before_run
        lines = "; ".join(f"node {n!r}: {r}" for n, r in self.refusals.items())
        when = " (their published policies, before any Flower run started)" if before_run else ""
        super().__init__(f"training refused by {len(self.refusals)} node(s){when}: {lines}")


class TrainingFailed(TrainingError):
    """The Flower run failed or ended without producing a model."""
