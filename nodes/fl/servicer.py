"""The node's TrainingService: serve the node's own SuperNode, record every round.

Only the node's own Flower SuperNode may call (its certificate: role ``node``, this
node's name). Both calls run the node's one pipeline (:mod:`nodes.rpc`):

``OpenTraining``
    The analyst's certificate (carried in the request) is checked against the federation
    CA; signature, header and nonce as for queries; the job's whole (epsilon, delta) for
    its updates is checked before admission -- its delta against the policy's
    ``max_delta_per_job``, both against what is left of the budget -- then the policy
    engine admits the use (operation ``training``, recorded as ``fl_train``); only then
    are the rows read. An exact dataset below ``min_group_size`` rows is refused
    (``denied`` recorded); under DP nothing after admission depends on the rows (rows
    with non-numeric values are left out, a few rows or none are trained on all the
    same). The grant and the rows are streamed back. Presenting the same signed request
    again (each round's ClientApp does) streams the same grant and rows without a new
    entry: it is the same admitted use.
``RecordRound``
    The round must belong to an open job and not exceed its approved rounds; each round is
    a release whose cost :func:`nodes.release.training.round_cost` gives (DP on: an update
    spends (epsilon, delta), an evaluation epsilon, and is refused where the DP policy does
    not allow evaluation): the policy engine checks, records ``released`` (``fl_round`` for
    an update, ``fl_evaluate`` for metrics) with the job's request digest, the hashes of
    the model received and of what leaves and the cost, and charges, in one critical
    section. Under DP the exact row count goes to the entry's private part only. A refusal
    is recorded as ``denied``.

Register with :func:`add_training_service` (one call in the node server).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import grpc
import numpy as np

from datafed.errors import PkiError
from datafed.fl.serde import grant_to_proto, parse_training_body, round_from_proto, spec_from_proto
from datafed.fl.spec import RoundEntry, TrainingGrant, TrainingSpec
from datafed.pki.ca import Identity
from datafed.pki.peers import verify_peer
from datafed.proto.v1 import training_pb2, training_pb2_grpc
from datafed.wire.signing import RequestHeader
from nodes.context import NodeContext
from nodes.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from nodes.gate import peer_identity, request_digest
from nodes.policy import Use
from nodes.policy.budget import delta_details
from nodes.release.training import evaluation_terms, job_cost, round_cost, training_rows
from nodes.rpc import Context, SignedCall, signed_call

__all__ = ["ROWS_PER_CHUNK", "TrainingServicer", "add_training_service", "training_service_name"]

log = logging.getLogger("datafed.node")
ROWS_PER_CHUNK = 4096


@dataclass
class _Job:
    analyst: Identity
    header: RequestHeader
    spec: TrainingSpec
    digest: str
    x: np.ndarray[tuple[int, int], np.dtype[np.float64]]
    y: np.ndarray[tuple[int], np.dtype[np.float64]]
    evaluation: tuple[bool, float]
    recorded: set[tuple[int, str]] = field(default_factory=set)


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    """gRPC TrainingService of one agency node.

    Parameters
    ----------
    ctx : NodeContext
        The node's shared state (config, store, ledger, policy engine).
    """

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = asyncio.Lock()

    def _own_supernode(self, context: Context) -> Identity:
        caller = peer_identity(context, self.ctx.trust)
        if caller.role != "node" or caller.name != self.ctx.name:
            raise PermissionDenied(
                f"training data is served only to node {self.ctx.name!r}'s own SuperNode, "
                f"not to {caller}"
            )
        return caller

    # ------------------------------------------------------------------ open
    async def OpenTraining(  # noqa: N802 - gRPC method name
        self, request: training_pb2.OpenTrainingRequest, context: Context
    ) -> AsyncIterator[training_pb2.TrainingData]:
        """Check and record the analyst's request; stream the grant and approved rows."""
        digest = request_digest(request.request)
        async with self._lock:
            job = self._jobs.get(digest)
        if job is None:
            job = await self._open(request, context, digest)
        refused, bound = job.evaluation
        grant = grant_to_proto(
            TrainingGrant(
                self.ctx.name,
                job.header.job_id,
                job.spec,
                len(job.y),
                digest,
                evaluation_refused=refused,
                evaluation_loss_bound=bound,
            )
        )
        grant.ledger.CopyFrom(self.ctx.head_proto())
        yield training_pb2.TrainingData(grant=grant)
        for start in range(0, len(job.y), ROWS_PER_CHUNK):
            rows = training_pb2.TrainingRows(
                features=job.x[start : start + ROWS_PER_CHUNK].ravel().tolist(),
                labels=job.y[start : start + ROWS_PER_CHUNK].tolist(),
            )
            yield training_pb2.TrainingData(rows=rows)

    async def _open(
        self,
        request: training_pb2.OpenTrainingRequest,
        context: Context,
        digest: str,
    ) -> _Job:
        ctx = self.ctx
        async with signed_call(ctx, context, request.request, "fl_train", protection="fl") as call:
            caller = self._own_supernode(context)
            try:  # the analyst is not on this connection: check its certificate ourselves
                analyst = verify_peer(request.requester_cert, ctx.anchors_pem, role="analyst")
            except PkiError as exc:
                raise Unauthenticated(f"requester certificate: {exc}") from exc
            body = call.open(parse_training_body, identity=analyst)
            assert call.header is not None
            try:
                spec = spec_from_proto(body.spec)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"invalid training spec: {exc}") from exc
            call.dataset, call.protection = spec.dataset, spec.protection
            use = Use(
                operation="training",
                requester=analyst,
                header=call.header,
                dataset=spec.dataset,
                columns=frozenset(spec.columns),
                protection=spec.protection,
                epsilon=0.0,  # each round's release spends its own epsilon (RecordRound)
                dp_requested=spec.dp.enabled,
                model=spec.model,
                details=_open_details(spec, str(caller)),
            )
            ctx.policy.check(use)
            ctx.policy.check_job(analyst.name, spec.dataset, *job_cost(spec))
            await self._make_room(analyst.name)
            grant = await call.admit(use)
            x, y = await call.compute(training_rows, ctx.store, spec, grant.policy)
            job = _Job(analyst, call.header, spec, digest, x, y, evaluation_terms(grant.policy))
            async with self._lock:
                self._jobs[digest] = job
            return job
        raise AssertionError("unreachable")  # signed_call aborts on every failure

    async def _make_room(self, requester: str) -> None:
        """Room for one more open job of ``requester`` (``[limits]``), before admission.

        A requester at its quota gives way with its own oldest job; nobody can push out
        another requester's jobs: a full table refuses new ones until jobs finish.
        """
        limits = self.ctx.config.limits
        async with self._lock:
            mine = [d for d, j in self._jobs.items() if j.analyst.name == requester]
            while len(mine) >= limits.max_open_jobs_per_requester:
                del self._jobs[mine.pop(0)]
            if len(self._jobs) >= limits.max_open_jobs:
                raise Unavailable(
                    f"this node holds {limits.max_open_jobs} open training jobs "
                    "(limits.max_open_jobs); try again later"
                )

    # ----------------------------------------------------------------- rounds
    async def RecordRound(  # noqa: N802 - gRPC method name
        self, request: training_pb2.RecordRoundRequest, context: Context
    ) -> training_pb2.RecordRoundResponse:
        """Record one round of an open job (charging its epsilon when DP is on)."""
        operation = "fl_evaluate" if request.phase == "evaluate" else "fl_round"
        async with signed_call(self.ctx, context, None, operation, protection="fl") as call:
            self._own_supernode(context)
            try:
                entry = round_from_proto(request)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"invalid round record: {exc}") from exc
            call.details.update(_details(entry, None))
            async with self._lock:
                job = next(
                    (j for j in self._jobs.values() if j.header.job_id == entry.job_id), None
                )
                if job is None:
                    raise NotFound(f"no open training job {entry.job_id!r} at this node")
                _adopt(call, job, entry)
                self._check_round(job, entry)
                policy = self.ctx.policy.policy(job.spec.dataset)
                epsilon, delta = round_cost(job.spec, entry.phase, policy)
                dp = job.spec.dp.enabled

                def record() -> Awaitable[int]:
                    return call.record(
                        decision="released",
                        reason=f"round {entry.round} {entry.phase}"
                        + ("" if dp else f": {entry.num_examples} examples"),
                        epsilon=epsilon,
                        result_digest=entry.update_out_sha256,
                        details=delta_details(delta),
                        private={"rows": str(len(job.y))} if dp else None,
                    )

                index = await self.ctx.policy.charge(
                    job.analyst.name, job.spec.dataset, epsilon, record, delta
                )
                job.recorded.add((entry.round, entry.phase))
            return training_pb2.RecordRoundResponse(
                entry_index=index, epsilon_charged=epsilon, ledger=call.head()
            )
        raise AssertionError("unreachable")  # signed_call aborts on every failure

    @staticmethod
    def _check_round(job: _Job, entry: RoundEntry) -> None:
        if not 1 <= entry.round <= job.spec.rounds:
            raise PermissionDenied(
                f"round {entry.round} is outside the {job.spec.rounds} round(s) approved "
                f"for job {entry.job_id!r}"
            )
        if (entry.round, entry.phase) in job.recorded:
            raise PermissionDenied(f"round {entry.round} ({entry.phase}) was already recorded")
        if entry.num_examples > len(job.y) and not job.spec.dp.enabled:
            raise InvalidRequest("num_examples exceeds the rows granted")
        if entry.phase == "fit" and entry.secagg != job.spec.secagg:
            raise PermissionDenied(
                f"job {entry.job_id!r} was approved {'with' if job.spec.secagg else 'without'} "
                "SecAgg+; this round does not match"
            )


def _open_details(spec: TrainingSpec, supernode: str) -> dict[str, str]:
    return {
        "rounds": str(spec.rounds),
        "features": ",".join(spec.feature_columns),
        "label": spec.label_column,
        "model": spec.model,
        "dp": spec.dp.describe(),
        "secagg": "yes" if spec.secagg else "no",
        "supernode": supernode,
    }


def _adopt(call: SignedCall, job: _Job, entry: RoundEntry) -> None:
    """Record a round as the job's: the analyst, header and request digest of its opening."""
    call.identity, call.header, call.digest = job.analyst, job.header, job.digest
    call.dataset, call.protection = job.spec.dataset, job.spec.protection
    call.details.update(_details(entry, job))


def _details(entry: RoundEntry | None, job: _Job | None) -> dict[str, str]:
    if entry is None:
        return {}
    out = {
        "round": str(entry.round),
        "phase": entry.phase,
        "model_in": entry.model_in_sha256,
        "update_out": entry.update_out_sha256,
        "num_examples": str(entry.num_examples),
    }
    if job is not None:
        out["secagg"] = "yes" if job.spec.secagg else "no"
        out["dp"] = job.spec.dp.describe()
        out["rounds_approved"] = str(job.spec.rounds)
    return out


def add_training_service(server: grpc.aio.Server, node_context: NodeContext) -> TrainingServicer:
    """Register the TrainingService on the node's gRPC server; return the servicer."""
    servicer = TrainingServicer(node_context)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)
    return servicer


def training_service_name() -> str:
    """Full name of the service (for health checking and reflection)."""
    return training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
