"""The ServerApp's workflow: open the job at every node, then Flower's rounds with SecAgg+.

1. **Open.** Wait until the job's nodes are connected, then send each a
   ``query.datafed_open`` message. Its ClientApp presents the analyst's signed request to
   its own node, which checks signature, policy and budget and records the decision. A
   node that refuses stops the job before any round (the result names node and reason).
2. **Rounds.** Flower's ``DefaultWorkflow`` with ``SecAggPlusWorkflow`` as the fit
   workflow (default) or Flower's plain fit workflow, and an evaluate workflow that
   waits at most ``stage-timeout`` seconds so a dead SuperNode cannot stall the job.

Flower's SecAgg+ implementation runs on the legacy ``LegacyContext`` strategy API, hence
the ``flwr.server`` imports.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, EvaluateRes
from flwr.server import LegacyContext
from flwr.server.client_proxy import ClientProxy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from datafed.fl.errors import TrainingFailed
from datafed.fl.settings import RunSettings

__all__ = [
    "OPEN_MESSAGE_TYPE",
    "OPEN_RECORD",
    "OpenOutcome",
    "PromptGrid",
    "SecAggPlusWithEarlyDropouts",
    "build_workflow",
    "open_job",
    "timed_evaluate_workflow",
    "wait_for_nodes",
]

#: Message type and record name of the open phase (handled by the node's ClientApp mod).
OPEN_MESSAGE_TYPE = f"{MessageType.QUERY}.datafed_open"
OPEN_RECORD = "datafed-open"


@dataclass
class OpenOutcome:
    """Which nodes approved the job, which refused, and their Flower node ids."""

    approved: dict[int, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    not_in_job: list[int] = field(default_factory=list)


class PromptGrid(Grid):
    """Flower's grid, collecting replies every ``interval_s`` instead of every 3 seconds.

    Flower 1.41's deployment grid sleeps 3 s between pulls while it waits for replies;
    a SecAgg+ round is four exchanges, so that alone adds seconds per round. This wrapper
    delegates everything to the SuperLink's grid and only polls more often (a pull is one
    small HTTPS request to the SuperLink).
    """

    def __init__(self, inner: Grid, interval_s: float = 0.05) -> None:
        self.inner = inner
        self.interval_s = interval_s

    def set_run(self, run: Run) -> None:
        """Delegate."""
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        """The inner grid's run."""
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Delegate."""
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Delegate."""
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegate."""
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegate."""
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull every ``interval_s`` until all replied or ``timeout`` passed."""
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            out.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.interval_s)
        return out


def wait_for_nodes(grid: Grid, count: int, timeout_s: float) -> list[int]:
    """Block until at least ``count`` SuperNodes are connected; return their ids.

    Raises
    ------
    TrainingFailed
        If fewer are connected after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= count:
            return ids
        if time.monotonic() >= deadline:
            raise TrainingFailed(
                f"only {len(ids)} of {count} SuperNodes connected in {timeout_s:g}s"
            )
        time.sleep(0.5)


def open_job(
    grid: Grid,
    node_ids: list[int],
    job_id: str,
    timeout_s: float | None,
    expected: Collection[str] | None = None,
) -> OpenOutcome:
    """Ask every node's ClientApp to open the job with its node; collect the answers.

    The SuperLink does not authenticate SuperNodes (docs/training.md, "SuperNode
    authentication"), so a SuperNode's claim to be a node is checked here
    (:func:`_check_claims`): a node of the job claimed by two SuperNodes, or a node the job
    does not name (``expected``), is refused and never trained with.
    """
    content = RecordDict({OPEN_RECORD: ConfigRecord({"job-id": job_id})})
    msgs = [
        Message(content=content, dst_node_id=nid, message_type=OPEN_MESSAGE_TYPE, group_id="open")
        for nid in node_ids
    ]
    out = OpenOutcome()
    replies = list(grid.send_and_receive(msgs, timeout=timeout_s))
    answered = set()
    for reply in replies:
        nid = reply.metadata.src_node_id
        answered.add(nid)
        if reply.has_error():
            out.refusals[f"node-id-{nid}"] = f"ERROR: {reply.error.reason}"
            continue
        rec = reply.content.config_records.get(OPEN_RECORD, ConfigRecord())
        # a ClientApp that cannot even read its job names no node: keep each one apart
        node = str(rec.get("node", "")) or f"node-id-{nid}"
        status = str(rec.get("status", ""))
        if status == "approved":
            out.approved[nid] = node
            out.rows[node] = int(cast(int, rec.get("num-rows", 0)))
        elif status == "not-in-job":
            out.not_in_job.append(nid)
        else:
            out.refusals[node] = f"{rec.get('code', 'UNKNOWN')!s}: {rec.get('reason', '')!s}"
    for nid in node_ids:
        if nid not in answered:
            out.refusals[f"node-id-{nid}"] = "DEADLINE_EXCEEDED: no answer to the open request"
    _check_claims(out, expected)
    return out


def _check_claims(out: OpenOutcome, expected: Collection[str] | None) -> None:
    """Refuse approvals from SuperNodes that claim a node twice or one outside the job."""
    claims: dict[str, list[int]] = {}
    for nid, node in sorted(out.approved.items()):
        claims.setdefault(node, []).append(nid)
    for node, nids in claims.items():
        if len(nids) > 1:
            ids = ", ".join(map(str, nids))
            out.refusals[node] = (
                f"UNAUTHENTICATED: {len(nids)} SuperNodes (Flower node ids {ids}) claim to be "
                f"node {node!r}; at most one is; none is trained with"
            )
        elif expected is not None and node not in expected:
            out.refusals[node] = (
                f"UNAUTHENTICATED: a SuperNode (Flower node id {nids[0]}) claims to be node "
                f"{node!r}, which this job does not name"
            )
        else:
            continue
        for nid in nids:
            del out.approved[nid]
            out.rows.pop(node, None)


def timed_evaluate_workflow(timeout_s: float | None) -> object:
    """Return Flower's evaluate workflow, waiting at most ``timeout_s`` for replies."""

    def evaluate_workflow(grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = cast(int, cfg[Key.CURRENT_ROUND])
        params = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        instructions = context.strategy.configure_evaluate(
            server_round=current_round, parameters=params, client_manager=context.client_manager
        )
        if not instructions:
            return
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        out = [
            Message(
                content=compat.evaluateins_to_recorddict(ins, True),
                dst_node_id=proxy.node_id,
                message_type=MessageType.EVALUATE,
                group_id=str(current_round),
            )
            for proxy, ins in instructions
        ]
        replies = list(grid.send_and_receive(out, timeout=timeout_s))
        results: list[tuple[ClientProxy, EvaluateRes]] = []
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException] = []
        for msg in replies:
            if not msg.has_content():
                failures.append(Exception(msg.error))
                continue
            res = compat.recorddict_to_evaluateres(msg.content)
            pair = (proxies[msg.metadata.src_node_id], res)
            (results if res.status.code == Code.OK else failures).append(pair)  # type: ignore[arg-type]
        loss, metrics = context.strategy.aggregate_evaluate(current_round, results, failures)
        if loss is not None:
            context.history.add_loss_distributed(server_round=current_round, loss=loss)
            context.history.add_metrics_distributed(server_round=current_round, metrics=metrics)

    return evaluate_workflow


class SecAggPlusWithEarlyDropouts(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, also surviving nodes that drop before sharing keys.

    Flower 1.41 counts every node sampled at setup as "dead" in the unmask stage if it is
    not active, and asks its neighbours for shares of its key -- shares a node that died
    before the share-keys stage never sent, so the neighbours fail and the round is lost.
    Such a node has no masks in the sum, so there is nothing to recover: after the
    share-keys stage we keep only the nodes that completed it as "sampled". Nodes that
    drop later (after sharing) are still unmasked from their shares as Flower intends.
    """

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Run Flower's share-keys stage, then forget nodes that never shared keys."""
        ok = super().share_keys_stage(grid, context, state)
        state.sampled_node_ids = set(state.active_node_ids)
        return ok


def build_workflow(settings: RunSettings) -> DefaultWorkflow:
    """Flower's DefaultWorkflow with SecAgg+ (when on) and the timed evaluate workflow."""
    timeout = settings.stage_timeout or None
    fit = None
    if settings.secagg:
        fit = SecAggPlusWithEarlyDropouts(
            num_shares=settings.secagg_shares,
            reconstruction_threshold=settings.secagg_threshold,
            max_weight=settings.secagg_max_weight,
            clipping_range=settings.secagg_clip,
            timeout=timeout,
        )
    return DefaultWorkflow(
        fit_workflow=fit,
        evaluate_workflow=timed_evaluate_workflow(timeout),  # type: ignore[arg-type]
    )
