"""A Flower ``Grid`` that runs ClientApps in this process, one message at a time.

Deployment (SuperLink and SuperNode processes) and Flower's simulation engine (Ray)
both add seconds of scheduling per message exchange, which drowns what the benchmarks
want to see: the cost of one round of the *same* Flower ServerApp workflow and ClientApp
with and without datafed's mods. :class:`DirectGrid` delivers each message straight to
``client_app(message, context)`` (a deep copy, as a real transport would deliver), keeps
one ``Context`` per node across messages (as a SuperNode does), and can drop a node to
exercise SecAgg+ dropouts. It is for benchmarks, tests and quick local experiments;
federations use SuperLink/SuperNodes or the simulation engine.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from datafed.fl.settings import RunSettings

__all__ = ["DirectGrid", "RoundDriver"]

log = logging.getLogger("datafed.fl")


class DirectGrid(Grid):
    """Deliver messages synchronously to in-process ClientApps.

    Parameters
    ----------
    client_app : flwr.clientapp.ClientApp
        The ClientApp every node runs.
    node_configs : Sequence[Mapping[str, Any]]
        One ``node_config`` per node (node ids are 1001, 1002, ...).
    run_config : Mapping[str, Any]
        The run config every node sees.
    run_id : int
        The run's id.
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: Sequence[Mapping[str, Any]],
        run_config: Mapping[str, Any],
        run_id: int = 1,
    ) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        # Flower's Message constructor reads the current task's identity (as a ServerApp
        # process has it); this process plays the ServerApp of run ``run_id``.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.contexts = {
            1001 + i: Context(run_id, 1001 + i, dict(cfg), RecordDict(), dict(run_config))
            for i, cfg in enumerate(node_configs)
        }
        self.dropped: set[int] = set()
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        """Use ``run`` as the current run."""
        self._run = run

    @property
    def run(self) -> Run:
        """The current run."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build an instruction message (as Flower's ``Message`` constructor would)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Ids of the nodes that have not dropped out."""
        return [nid for nid in self.contexts if nid not in self.dropped]

    def drop(self, node_id: int) -> None:
        """Make a node stop answering (a SuperNode that died)."""
        self.dropped.add(node_id)

    def _deliver(self, msg: Message) -> Message | None:
        nid = msg.metadata.dst_node_id
        if nid in self.dropped or nid not in self.contexts:
            return None
        try:
            reply = self.client_app(copy.deepcopy(msg), self.contexts[nid])
        except Exception as exc:
            log.warning("ClientApp on node %d raised %s: %s", nid, type(exc).__name__, exc)
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=msg)
        return copy.deepcopy(reply)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now; keep the replies for :meth:`pull_messages`."""
        ids: list[str] = []
        for msg in messages:
            meta = msg.metadata.__dict__
            meta["_message_id"] = uuid.uuid4().hex
            meta["_run_id"] = self._run.run_id
            meta["_src_node_id"] = SUPERLINK_NODE_ID
            ids.append(msg.metadata.message_id)
            reply = self._deliver(msg)
            if reply is not None:
                self._replies[msg.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies to the given messages that exist."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver and collect; dropped nodes simply do not answer (no waiting)."""
        return list(self.pull_messages(list(self.push_messages(messages))))


class RoundDriver:
    """Step the ServerApp's round workflow one round at a time over a :class:`DirectGrid`.

    The same Flower pieces as :func:`datafed.fl.server_app.run_job` -- SecAgg+ (or plain)
    fit workflow, the timed evaluate workflow, a Flower strategy -- but each
    :meth:`step` runs exactly one round, so a benchmark can time rounds.

    Parameters
    ----------
    grid : DirectGrid
        Where messages go.
    settings : RunSettings
        Model, SecAgg+ and timeout settings.
    audited : bool
        Wrap the strategy in :class:`~datafed.fl.strategy.AuditedStrategy` (datafed's
        server side) or run Flower's FedAvg as it comes.
    node_names : dict[int, str], optional
        Node names for the audited strategy (from the open phase).
    fit_workflow : callable, optional
        The fit workflow instead of datafed's (benchmarks compare Flower's own
        ``SecAggPlusWorkflow`` with the same parameters).
    """

    def __init__(
        self,
        grid: DirectGrid,
        settings: RunSettings,
        *,
        audited: bool = True,
        node_names: dict[int, str] | None = None,
        fit_workflow: Any = None,
    ) -> None:
        from flwr.common import ndarrays_to_parameters
        from flwr.compat.common.recorddict_compat import parameters_to_arrayrecord
        from flwr.server import LegacyContext, ServerConfig
        from flwr.server.client_manager import SimpleClientManager
        from flwr.server.compat.grid_client_proxy import GridClientProxy
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
        from flwr.server.workflow.default_workflows import default_fit_workflow

        from datafed.fl.model import initial_weights
        from datafed.fl.strategies import make_strategy
        from datafed.fl.strategy import AuditedStrategy
        from datafed.fl.workflow import SecAggPlusWithEarlyDropouts, timed_evaluate_workflow

        self.grid = grid
        init = ndarrays_to_parameters(
            initial_weights(settings.n_features, settings.model, settings.seed)
        )
        strategy = make_strategy(settings.strategy, init, 2 if settings.secagg else 1)
        if audited:
            strategy = AuditedStrategy(strategy, node_names, num_rounds=10**6, eval_every=1)
        manager = SimpleClientManager()
        for nid in grid.get_node_ids():
            manager.register(GridClientProxy(nid, grid, grid.run.run_id))
        context = Context(grid.run.run_id, 0, {}, RecordDict(), settings.to_run_config())
        self.context = LegacyContext(context, ServerConfig(num_rounds=10**6), strategy, manager)
        self.context.state.array_records[MAIN_PARAMS_RECORD] = parameters_to_arrayrecord(init, True)
        self._cfg = ConfigRecord({Key.START_TIME: 0.0, Key.CURRENT_ROUND: 0})
        self.context.state.config_records[MAIN_CONFIGS_RECORD] = self._cfg
        self._key = Key.CURRENT_ROUND
        timeout = settings.stage_timeout or None
        self.fit: Any = (
            SecAggPlusWithEarlyDropouts(
                settings.secagg_shares,
                settings.secagg_threshold,
                max_weight=settings.secagg_max_weight,
                clipping_range=settings.secagg_clip,
                timeout=timeout,
            )
            if settings.secagg
            else default_fit_workflow
        )
        if fit_workflow is not None:
            self.fit = fit_workflow
        self.evaluate: Any = timed_evaluate_workflow(timeout)
        self.rounds = 0

    def step(self) -> int:
        """Run one round (fit, then federated evaluation); return its number."""
        self.rounds += 1
        self._cfg[self._key] = self.rounds
        self.fit(self.grid, self.context)
        self.evaluate(self.grid, self.context)
        return self.rounds
