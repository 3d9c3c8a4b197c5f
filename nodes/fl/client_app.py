"""The agency's Flower ClientApp: ``nodes.fl.client_app:app``.

Runs in the agency's SuperNode (or Flower's simulation engine). Each fit or evaluate
asks the node for the approved rows through the gateway, trains or evaluates the
PyTorch model locally, and returns the update -- which the mods record in the node's
ledger, noise when the node granted DP, and mask under SecAgg+ before it leaves.

``plain_app`` is the same client without our mods (no policy, ledger, budget or DP):
the baseline the ``fl.round`` benchmark compares against.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from datafed.fl.strategy import KEY_ROUND
from nodes.fl.gateway import Presented, TrainingData
from nodes.fl.job import job_context
from nodes.fl.mods import dp_mod, ledger_mod, open_mod, secagg_mod

__all__ = ["MODS", "PLAIN_MODS", "DatafedClient", "app", "client_fn", "plain_app"]


class DatafedClient(NumPyClient):
    """Local training and evaluation over the rows the node approved."""

    def __init__(self, context: Context) -> None:
        self.job = job_context(context)

    def _data(self) -> TrainingData:
        data = self.job.gateway.open(
            Presented(self.job.request, self.job.requester_cert), with_rows=True
        )
        if data.x is None or data.y is None or len(data.y) == 0:
            raise ValueError(f"node {self.job.gateway.node!r} granted no rows")
        return data

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
        from datafed.fl.model import LocalTraining, get_weights, train_model

        data = self._data()
        assert data.x is not None and data.y is not None
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
        """Evaluate the received global model on the approved rows."""
        from datafed.fl.model import evaluate_model

        data = self._data()
        assert data.x is not None and data.y is not None
        loss, acc = evaluate_model(self._net(data, parameters), data.x, data.y)
        return loss, len(data.y), {"accuracy": acc, "positives": float(np.mean(data.y))}


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
