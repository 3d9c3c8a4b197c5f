"""What the ClientApp knows about the current job: settings, gateway, request, grant.

The grant the node issued when the job was opened is kept in the Flower ``Context``
state of this SuperNode (which persists across the messages of a run), so later
messages -- SecAgg+ stages, rounds, evaluations -- know the job is open and which DP
parameters the node approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flwr.app import ConfigRecord, Context

from datafed.errors import ProtocolError
from datafed.fl.serde import bundle_from_text
from datafed.fl.settings import RunSettings
from datafed.fl.spec import EVALUATION_LOSS_BOUND, DpParams, TrainingGrant
from datafed.proto.v1 import common_pb2
from nodes.fl.connect import gateway_for
from nodes.fl.errors import ClientAppError
from nodes.fl.gateway import NodeGateway

__all__ = ["GRANT_RECORD", "GrantInfo", "JobContext", "job_context", "load_grant", "store_grant"]

GRANT_RECORD = "datafed-grant"


@dataclass(frozen=True)
class JobContext:
    """Everything a mod or the client needs to act for this node in this run."""

    settings: RunSettings
    gateway: NodeGateway
    job_id: str
    request: common_pb2.SignedRequest | None
    requester_cert: bytes


@dataclass(frozen=True)
class GrantInfo:
    """The part of a node's grant the ClientApp keeps between messages."""

    node: str
    job_id: str
    num_rows: int
    dp: DpParams
    evaluation_refused: bool = False
    evaluation_loss_bound: float = EVALUATION_LOSS_BOUND


def job_context(ctxt: Context) -> JobContext:
    """Build the job context from the Flower context (run config and node config).

    Raises
    ------
    ClientAppError
        If the run's settings or training bundle are malformed, or no node is configured.
    """
    try:
        settings = RunSettings.from_run_config(ctxt.run_config)
    except (TypeError, ValueError) as exc:
        raise ClientAppError(f"bad run config: {exc}") from exc
    gateway = gateway_for(ctxt.node_config, settings)
    job_id, request, cert = f"run-{ctxt.run_id}", None, b""
    if settings.bundle:
        try:
            bundle = bundle_from_text(settings.bundle)
        except ProtocolError as exc:
            raise ClientAppError(str(exc)) from exc
        job_id, cert = bundle.job_id, bundle.requester_cert
        if gateway.node in bundle.requests:
            request = bundle.requests[gateway.node]
    return JobContext(settings, gateway, job_id, request, cert)


def store_grant(ctxt: Context, grant: TrainingGrant) -> GrantInfo:
    """Remember the node's grant for the rest of the run."""
    dp = grant.spec.dp
    ctxt.state.config_records[GRANT_RECORD] = ConfigRecord(
        {
            "node": grant.node,
            "job-id": grant.job_id,
            "num-rows": grant.num_rows,
            "dp-enabled": dp.enabled,
            "dp-epsilon": dp.epsilon_per_round,
            "dp-delta": dp.delta,
            "dp-clip": dp.clipping_norm,
            "eval-refused": grant.evaluation_refused,
            "eval-loss-bound": grant.evaluation_loss_bound,
        }
    )
    return GrantInfo(
        grant.node,
        grant.job_id,
        grant.num_rows,
        dp,
        grant.evaluation_refused,
        grant.evaluation_loss_bound,
    )


def load_grant(ctxt: Context) -> GrantInfo | None:
    """Return the grant stored by :func:`store_grant`, or ``None`` if the job is not open."""
    rec = ctxt.state.config_records.get(GRANT_RECORD)
    if rec is None:
        return None
    dp = DpParams(
        bool(rec["dp-enabled"]),
        float(cast(float, rec["dp-epsilon"])),
        float(cast(float, rec["dp-delta"])),
        float(cast(float, rec["dp-clip"])),
    )
    return GrantInfo(
        str(rec["node"]),
        str(rec["job-id"]),
        int(cast(int, rec["num-rows"])),
        dp,
        bool(rec.get("eval-refused", False)),
        float(cast(float, rec.get("eval-loss-bound", EVALUATION_LOSS_BOUND))),
    )
