"""The agency's Flower mods: open the job with the node, record each round, apply DP.

A ClientApp's mods wrap its handler like middleware. Ours sit around Flower's own
``secaggplus_mod`` in this order (outermost first)::

    open_mod -> secaggplus_mod -> ledger_mod -> dp_mod -> the client's fit/evaluate

- :func:`open_mod` answers the ServerApp's ``query.datafed_open`` message by presenting
  the analyst's signed request to the node, and refuses every training message of a job
  the node has not approved.
- :func:`ledger_mod` runs *inside* SecAgg+, so it sees the update before it is masked:
  it hashes the global model received and the update about to leave, and has the node
  record the round (and charge the privacy budget) first. If the node refuses, the
  update never leaves; SecAgg+ treats this node as dropped out. An evaluation the node's
  grant refuses (a DP dataset without ``allow_evaluation``) is refused at the node before
  the model runs.
- :func:`dp_mod` releases the update through :func:`nodes.release.training.release_update`
  with the DP parameters the node granted: clipped and noised, with a constant weight and
  no metrics, before ``ledger_mod`` hashes it.

The open reply carries no row count under DP (:func:`nodes.release.training.open_reply_rows`).
"""

from __future__ import annotations

import hashlib
import logging

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from datafed.fl.digest import arrays_digest, metrics_digest
from datafed.fl.spec import RoundEntry
from datafed.fl.strategy import KEY_MODEL_IN, KEY_NODE, KEY_ROUND, KEY_UPDATE
from datafed.fl.workflow import OPEN_MESSAGE_TYPE, OPEN_RECORD
from nodes.fl.errors import ClientAppError, GatewayRefused
from nodes.fl.gateway import Presented
from nodes.fl.job import JobContext, job_context, load_grant, store_grant
from nodes.release.training import fit_weight, open_reply_rows, release_update

__all__ = ["dp_mod", "ledger_mod", "open_mod", "secagg_mod"]

log = logging.getLogger("datafed.fl.client")
_TRAINING = (MessageType.TRAIN, MessageType.EVALUATE)
_EMPTY = hashlib.sha256(b"").hexdigest()  # what leaves from a refused evaluation: nothing


def _error(msg: Message, reason: str) -> Message:
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason[:1000]), reply_to=msg)


def _open_reply(msg: Message, **values: str | int | float | bool) -> Message:
    return Message(RecordDict({OPEN_RECORD: ConfigRecord(dict(values))}), reply_to=msg)


def _open(msg: Message, ctxt: Context) -> Message:
    try:
        job = job_context(ctxt)
    except ClientAppError as exc:
        return _open_reply(
            msg, node="", status="refused", code="FAILED_PRECONDITION", reason=str(exc)
        )
    node = job.gateway.node
    asked = str(msg.content.config_records.get(OPEN_RECORD, ConfigRecord()).get("job-id", ""))
    if job.request is None and job.settings.bundle:
        return _open_reply(msg, node=node, status="not-in-job")
    if asked != job.job_id:
        return _open_reply(
            msg,
            node=node,
            status="refused",
            code="INVALID_ARGUMENT",
            reason=f"open asks for job {asked!r} but the signed requests are for {job.job_id!r}",
        )
    try:
        data = job.gateway.open(Presented(job.request, job.requester_cert), with_rows=False)
    except GatewayRefused as exc:
        log.warning("node %s refused job %s: %s", node, job.job_id, exc)
        return _open_reply(msg, node=node, status="refused", code=exc.code, reason=exc.reason)
    grant = store_grant(ctxt, data.grant)
    return _open_reply(
        msg,
        node=node,
        status="approved",
        **{"epsilon-per-round": grant.dp.epsilon_per_round, **open_reply_rows(data.grant)},
    )


def open_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Open the job with the node on request; refuse training for a job not opened.

    The run config cannot switch these mods off: a run is analyst-controlled, the mods are
    the agency's (the mod-free baseline is a different ClientApp, ``plain_app``).
    """
    mtype = msg.metadata.message_type
    if mtype == OPEN_MESSAGE_TYPE:
        return _open(msg, ctxt)
    if mtype in _TRAINING and load_grant(ctxt) is None:
        return _error(msg, "this node has not approved the job (no open grant)")
    return call_next(msg, ctxt)


def _round_of(config: dict[str, object], ctxt: Context, phase: str) -> int:
    """The round the ServerApp names, else this node's own count of the phase."""
    named = config.get(KEY_ROUND)
    if isinstance(named, int):
        return named
    counter = ctxt.state.config_records.setdefault("datafed-rounds", ConfigRecord())
    seen = counter.get(phase, 0)
    counter[phase] = (seen if isinstance(seen, int) else 0) + 1
    return counter[phase]  # type: ignore[return-value]


def _record(job: JobContext, msg: Message, entry: RoundEntry) -> Message | None:
    try:
        job.gateway.record(entry)
    except GatewayRefused as exc:
        log.warning("node %s refused to record round %d: %s", job.gateway.node, entry.round, exc)
        return _error(msg, f"node {job.gateway.node!r} refused round {entry.round}: {exc}")
    return None


def ledger_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Hash model in and update out, and have the node record the round before replying."""
    mtype = msg.metadata.message_type
    if mtype not in _TRAINING:
        return call_next(msg, ctxt)
    job = job_context(ctxt)
    fit = mtype == MessageType.TRAIN
    # Whether this update really leaves masked: SecAgg+ messages carry its record (the
    # run config only says what the ServerApp intends).
    masked = RECORD_KEY_CONFIGS in msg.content.config_records if fit else job.settings.secagg
    ins = (compat.recorddict_to_fitins if fit else compat.recorddict_to_evaluateins)(
        msg.content, keep_input=True
    )
    model_in = arrays_digest(parameters_to_ndarrays(ins.parameters))
    phase = "fit" if fit else "evaluate"
    rnd = _round_of(dict(ins.config), ctxt, phase)
    grant = load_grant(ctxt)
    if not fit and grant is not None and grant.evaluation_refused:
        # Refused before the model runs; the node records the refusal (its policy decides).
        nothing = RoundEntry(job.job_id, rnd, phase, model_in, _EMPTY, 0, masked)
        return _record(job, msg, nothing) or _error(msg, "evaluation is not allowed")
    out = call_next(msg, ctxt)
    if out.has_error():
        return out
    if fit:
        res = compat.recorddict_to_fitres(out.content, keep_input=True)
        digest_out = arrays_digest(parameters_to_ndarrays(res.parameters))
    else:
        res = compat.recorddict_to_evaluateres(out.content)  # type: ignore[assignment]
        shown = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str, bool))}
        digest_out = metrics_digest({"loss": float(res.loss), "n": res.num_examples, **shown})  # type: ignore[attr-defined]
    entry = RoundEntry(job.job_id, rnd, phase, model_in, digest_out, int(res.num_examples), masked)
    refused = _record(job, msg, entry)
    if refused is not None:
        return refused
    res.metrics.update({KEY_NODE: job.gateway.node, KEY_MODEL_IN: model_in, KEY_UPDATE: digest_out})
    out.content = (
        compat.fitres_to_recorddict(res, keep_input=True)  # type: ignore[arg-type]
        if fit
        else compat.evaluateres_to_recorddict(res)  # type: ignore[arg-type]
    )
    return out


def dp_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Release a fit's update under the node's granted DP parameters (if DP is on).

    :func:`nodes.release.training.release_update`: clipped to the clipping norm, Gaussian
    noise for sensitivity twice that norm (any two clipped updates differ by at most that
    much in L2, whatever rows of the node's data changed); the weight is the run's
    constant SecAgg+ maximum weight and the training loss is dropped (both are data).
    """
    grant = load_grant(ctxt)
    if msg.metadata.message_type != MessageType.TRAIN or grant is None or not grant.dp.enabled:
        return call_next(msg, ctxt)
    ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    received = parameters_to_ndarrays(ins.parameters)
    out = call_next(msg, ctxt)
    if out.has_error():
        return out
    res = compat.recorddict_to_fitres(out.content, keep_input=True)
    trained = parameters_to_ndarrays(res.parameters)
    res.parameters = ndarrays_to_parameters(release_update(received, trained, grant.dp))
    weight = job_context(ctxt).settings.secagg_max_weight
    res.num_examples = fit_weight(grant.dp, res.num_examples, int(weight))
    res.metrics = {}
    out.content = compat.fitres_to_recorddict(res, keep_input=True)
    return out


def secagg_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages; plain fit messages pass through.

    The same ClientApp then serves runs with SecAgg+ (the default) and without it.
    """
    if msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)
