"""The agency's Flower ClientApp: ``nodes.fl.client_app:app``.

Runs in the agency's SuperNode (or Flower's simulation engine). Each fit or evaluate
asks the node for the approved rows through the gateway, trains or evaluates the
PyTorch model locally, and returns the update -- which the mods record in the node's
ledger, release through :mod:`nodes.release.training` when the job has DP (clipped and
noised, a constant weight, no metrics), and mask under SecAgg+ before it leaves. Under DP
an evaluation leaves only as :func:`~nodes.release.training.release_evaluation` makes it
(noisy sums, no label mean), the node's rows may be few or none without anything
refusing, and a failure says only that the step failed (the cause goes to the log).

``plain_app`` is the same client without our mods (no policy, ledger, budget or DP):
the baseline the ``fl.round`` benchmark compares against.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from datafed.fl.strategy import KEY_ROUND
from nodes.fl.errors import ClientAppError
from nodes.fl.gateway import Presented, TrainingData
from nodes.fl.job import job_context
from nodes.fl.mods import dp_mod, ledger_mod, open_mod, secagg_mod
from nodes.release.training import release_evaluation

__all__ = ["MODS", "PLAIN_MODS", "DatafedClient", "app", "client_fn", "plain_app"]

log = logging.getLogger("datafed.fl.client")


class DatafedClient(NumPyClient):
    """Local training and evaluation over the rows the node approved."""

    def __init__(self, context: Context) -> None:
        self.job = job_context(context)

    def _data(self) -> TrainingData:
        data = self.job.gateway.open(
            Presented(self.job.request, self.job.requester_cert), with_rows=True
        )
        if data.x is None or data.y is None:
            raise ValueError(f"node {self.job.gateway.node!r} sent no rows")
        if len(data.y) == 0 and not data.grant.spec.dp.enabled:
            raise ValueError(f"node {self.job.gateway.node!r} granted no rows")
        return data

    def _fixed_failure(self, step: str, exc: Exception) -> ClientAppError:
        """Under DP a failure after admission says which step failed, never why."""
        log.warning("%s at node %s failed", step, self.job.gateway.node, exc_info=exc)
        return ClientAppError(f"{step} failed at node {self.job.gateway.node!r}")

    def _net(self, data: TrainingData, parameters: NDArrays) -> Any:
        import torch

        from datafed.fl.model import build_model, set_weights  # torch only when training

        # A small tabular model: one thread is faster than contending for the agency's cores.
        torch.set_num_threads(1)

        net = build_model(len(data.grant.spec.feature_columns), data.grant.spec.model)
        set_weights(net, parameters)
        return net

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train on the approved rows from the received global model."""
        data = self._data()
        if not data.grant.spec.dp.enabled:
            return self._fit(data, parameters, config)
        try:  # the dp mod releases the update (clipped, noised, a constant weight)
            return self._fit(data, parameters, config)
        except Exception as exc:
            raise self._fixed_failure("training", exc) from None

    def _fit(
        self, data: TrainingData, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        from datafed.fl.model import LocalTraining, get_weights, train_model

        assert data.x is not None and data.y is not None
        if len(data.y) == 0:  # DP only: no rows, no change (noise is added all the same)
            return parameters, 0, {}
        net = self._net(data, parameters)
        s = self.job.settings
        rnd = int(config.get(KEY_ROUND, 0))
        seed = zlib.crc32(f"{self.job.gateway.node}/{rnd}".encode()) + s.seed
        loss = train_model(
            net, data.x, data.y, LocalTraining(s.local_epochs, s.batch_size, s.lr), seed
        )
        return get_weights(net), len(data.y), {"train-loss": loss}

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Evaluate the received global model on the approved rows (released under DP)."""
        from datafed.fl.model import evaluate_model, evaluate_rows

        data = self._data()
        assert data.x is not None and data.y is not None
        grant = data.grant
        if not grant.spec.dp.enabled:
            loss, acc = evaluate_model(self._net(data, parameters), data.x, data.y)
            return loss, len(data.y), {"accuracy": acc, "positives": float(np.mean(data.y))}
        try:
            losses, right = evaluate_rows(self._net(data, parameters), data.x, data.y)
        except Exception as exc:
            raise self._fixed_failure("evaluation", exc) from None
        out = release_evaluation(
            losses, right, grant.spec.dp.epsilon_per_round, grant.evaluation_loss_bound
        )
        return out.loss, out.num_examples, {"accuracy": out.accuracy}


def client_fn(context: Context) -> Client:
    """Flower's client factory: one client per message, bound to this node."""
    return DatafedClient(context).to_client()


#: datafed's mods around Flower's SecAgg+ mod, outermost first (see :mod:`nodes.fl.mods`).
MODS = (open_mod, secagg_mod, ledger_mod, dp_mod)
#: Flower's SecAgg+ mod alone.
PLAIN_MODS = (secagg_mod,)

#: The ClientApp every datafed SuperNode runs.
app = ClientApp(client_fn=client_fn, mods=list(MODS))

#: The same Flower app without datafed's mods (benchmark baseline; never for real data).
plain_app = ClientApp(client_fn=client_fn, mods=list(PLAIN_MODS))
