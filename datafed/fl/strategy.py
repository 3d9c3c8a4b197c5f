"""A wrapper around any Flower strategy that tracks what lineage needs, round by round.

:class:`AuditedStrategy` delegates every decision to the wrapped strategy (FedAvg by
default, any ``flwr.server.strategy.Strategy`` allowed) and only observes: the digest of
the global model each round starts from, which nodes sent updates (each node's ClientApp
reports its name and the digests it recorded in its own ledger), which failed or dropped
out, and the digest of the aggregate. It also casts every aggregate to float32 so that
all parties hash the same bytes (SecAgg+ dequantises to float64).

The tracker's :class:`RoundLog` list becomes the analyst's training result; the node
ledgers hold the same digests, which is what lets an auditor check the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from datafed.fl.digest import arrays_digest
from datafed.fl.progress import Progress

__all__ = [
    "KEY_MODEL_IN",
    "KEY_NODE",
    "KEY_ROUND",
    "KEY_UPDATE",
    "ApprovedClientManager",
    "AuditedStrategy",
    "RoundLog",
]

#: Metric keys a datafed ClientApp reports (and config keys the server sends).
KEY_NODE = "datafed-node"
KEY_MODEL_IN = "datafed-model-in"
KEY_UPDATE = "datafed-update"
KEY_ROUND = "datafed-round"


@dataclass
class RoundLog:
    """What the analyst's side saw in one round."""

    round: int
    model_in: str = ""
    model_out: str = ""
    participants: list[str] = field(default_factory=list)
    updates: dict[str, str] = field(default_factory=dict)
    num_examples: int = 0
    failures: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    eval_participants: list[str] = field(default_factory=list)
    eval_loss: float | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return dict(self.__dict__)


class ApprovedClientManager(SimpleClientManager):
    """A client manager that admits only the nodes that approved the job."""

    def __init__(self, approved: set[int]) -> None:
        super().__init__()
        self.approved = set(approved)

    def register(self, client: ClientProxy) -> bool:
        """Admit an approved node; silently keep any other node out of the pool."""
        if getattr(client, "node_id", None) not in self.approved:
            return True
        return super().register(client)


def _node_of(proxy: ClientProxy, metrics: dict[str, Scalar], names: dict[int, str]) -> str:
    reported = metrics.get(KEY_NODE)
    if isinstance(reported, str) and reported:
        return reported
    return names.get(getattr(proxy, "node_id", -1), f"node-id-{proxy.cid}")


def _failure_text(f: tuple[ClientProxy, Any] | BaseException) -> str:
    if isinstance(f, BaseException):
        return str(f)[:300] or type(f).__name__
    proxy, res = f
    return f"node-id-{proxy.cid}: {getattr(res, 'status', '')}"[:300]


class AuditedStrategy(Strategy):
    """Delegate to ``inner``; record digests, participants and failures per round.

    Parameters
    ----------
    inner : flwr.server.strategy.Strategy
        The strategy that decides (FedAvg, FedProx, FedAdam, ...).
    node_names : dict[int, str]
        Flower node id -> agency node name, learned when the job was opened.
    num_rounds : int
        Rounds of the job (the last one is always evaluated).
    eval_every : int
        Federated evaluation every ``eval_every`` rounds (0: after the last round only).
        Only the nodes whose updates made the round's aggregate evaluate it.
    on_progress : callable, optional
        Called with a :class:`~datafed.fl.progress.Progress` after each fit and evaluation.
    """

    def __init__(
        self,
        inner: Strategy,
        node_names: dict[int, str] | None = None,
        num_rounds: int = 1,
        eval_every: int = 1,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.inner = inner
        self.on_progress = on_progress
        self.node_names = dict(node_names or {})
        self.num_rounds = num_rounds
        self.eval_every = eval_every
        self.rounds: dict[int, RoundLog] = {}
        self.final_arrays: list[np.ndarray[Any, Any]] | None = None
        self._last_fit: set[int] = set()

    def __repr__(self) -> str:
        return f"AuditedStrategy({self.inner!r})"

    def _log(self, server_round: int) -> RoundLog:
        return self.rounds.setdefault(server_round, RoundLog(server_round))

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """Delegate; the initial model is the wrapped strategy's."""
        params = self.inner.initialize_parameters(client_manager)
        if params is not None:
            self.final_arrays = parameters_to_ndarrays(params)
        return params

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Delegate, then tag each instruction with the round and the model's digest."""
        digest = arrays_digest(parameters_to_ndarrays(parameters))
        self._log(server_round).model_in = digest
        out = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, ins in out:
            ins.config[KEY_ROUND] = server_round
            ins.config[KEY_MODEL_IN] = digest
        return out

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Record who took part, delegate, and cast the aggregate to float32."""
        log = self._log(server_round)
        self._last_fit = {getattr(proxy, "node_id", -1) for proxy, _ in results}
        for proxy, res in results:
            node = _node_of(proxy, res.metrics, self.node_names)
            log.participants.append(node)
            log.updates[node] = str(res.metrics.get(KEY_UPDATE, ""))
            log.num_examples += int(res.num_examples)
            reported = res.metrics.get(KEY_MODEL_IN)
            if reported is not None and reported != log.model_in:
                log.mismatches.append(node)
        log.participants.sort()
        log.failures.extend(_failure_text(f) for f in failures)
        params, metrics = self.inner.aggregate_fit(server_round, results, failures)
        self._report(server_round, "fit", log.participants, len(log.failures), {})
        if params is None:
            return None, metrics
        arrays = [np.asarray(a, dtype=np.float32) for a in parameters_to_ndarrays(params)]
        log.model_out = arrays_digest(arrays)
        self.final_arrays = arrays
        return ndarrays_to_parameters(arrays), metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Delegate (on evaluation rounds, to the round's contributors) and tag each instruction."""
        due = self.eval_every and server_round % self.eval_every == 0
        if not due and server_round != self.num_rounds:
            return []
        digest = arrays_digest(parameters_to_ndarrays(parameters))
        out = self.inner.configure_evaluate(server_round, parameters, client_manager)
        out = [(p, ins) for p, ins in out if getattr(p, "node_id", -1) in self._last_fit]
        for _, ins in out:
            ins.config[KEY_ROUND] = server_round
            ins.config[KEY_MODEL_IN] = digest
        return out

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Delegate; record the federated evaluation and who took part."""
        log = self._log(server_round)
        log.eval_participants = sorted(
            _node_of(proxy, res.metrics, self.node_names) for proxy, res in results
        )
        loss, metrics = self.inner.aggregate_evaluate(server_round, results, failures)
        log.eval_loss = loss
        log.eval_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        shown = {**({"loss": float(loss)} if loss is not None else {}), **log.eval_metrics}
        self._report(server_round, "evaluate", log.eval_participants, len(failures), shown)
        return loss, metrics

    def _report(
        self, rnd: int, phase: str, nodes: list[str], failures: int, metrics: dict[str, float]
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(phase, rnd, self.num_rounds, tuple(nodes), failures, metrics))

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Delegate centralised evaluation (none by default)."""
        return self.inner.evaluate(server_round, parameters)
