"""The node's TrainingService: serve the node's own SuperNode, record every round.

Only the node's own Flower SuperNode may call (its certificate: role ``node``, this
node's name). For every call the order is that of queries (DESIGN §4):

``OpenTraining``
    1. the analyst's certificate (carried in the request) is checked against the
       federation CA; signature, header and nonce as for queries (:mod:`nodes.gate`);
    2. the spec is checked against the dataset policy (:mod:`nodes.fl.policy`) and the
       job's whole epsilon against the privacy budget;
    3. ``approved`` or ``denied`` (operation ``fl_train``) goes into the ledger;
    4. only then are the rows read; a dataset below ``min_group_size`` rows is refused
       (``denied`` recorded); the grant and the rows are streamed back.
    Presenting the same signed request again (each round's ClientApp does) streams the
    same grant and rows without a new entry: it is the same approved use.
``RecordRound``
    The round must belong to an open job and not exceed its approved rounds; when DP is
    on its epsilon is charged first; then ``released`` (operation ``fl_round`` for an
    update, ``fl_evaluate`` for metrics) is recorded with the job's request digest, the
    hash of the model received and of what leaves. A refusal is recorded as ``denied``.

Register with :func:`add_training_service` (one call in the node server).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
import numpy as np

from datafed.errors import PkiError
from datafed.fl.serde import grant_to_proto, parse_training_body, round_from_proto, spec_from_proto
from datafed.fl.spec import RoundEntry, TrainingGrant, TrainingSpec
from datafed.peers import verify_peer
from datafed.pki import Identity
from datafed.proto.v1 import query_pb2, training_pb2, training_pb2_grpc
from datafed.signing import RequestHeader, now_ms
from nodes.context import NodeContext
from nodes.errors import (
    InvalidRequest,
    NodeError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from nodes.fl.budget import BudgetBook
from nodes.fl.policy import check_training
from nodes.gate import open_signed, peer_identity, request_digest

__all__ = ["ROWS_PER_CHUNK", "TrainingServicer", "add_training_service", "training_service_name"]

log = logging.getLogger("datafed.node")
ROWS_PER_CHUNK = 4096
MAX_OPEN_JOBS = 256


@dataclass
class _Job:
    analyst: Identity
    header: RequestHeader
    spec: TrainingSpec
    digest: str
    x: np.ndarray[tuple[int, int], np.dtype[np.float64]]
    y: np.ndarray[tuple[int], np.dtype[np.float64]]
    recorded: set[tuple[int, str]] = field(default_factory=set)


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    """gRPC TrainingService of one agency node.

    Parameters
    ----------
    ctx : NodeContext
        The node's shared state (config, store, ledger, replay cache).
    budget : BudgetBook, optional
        Privacy budgets (default: the node's own, shared with queries and every other
        operation, see :mod:`nodes.budget`).
    """

    def __init__(self, ctx: NodeContext, budget: BudgetBook | None = None) -> None:
        self.ctx = ctx
        self.budget: BudgetBook = budget or ctx.budget
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = asyncio.Lock()

    def _own_supernode(self, context: grpc.aio.ServicerContext) -> Identity:  # type: ignore[type-arg]
        caller = peer_identity(context)
        if caller.role != "node" or caller.name != self.ctx.name:
            raise PermissionDenied(
                f"training data is served only to node {self.ctx.name!r}'s own SuperNode, "
                f"not to {caller}"
            )
        return caller

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        exc: NodeError,
        *,
        operation: str,
        who: Identity | None,
        header: RequestHeader | None,
        dataset: str,
        digest: str,
        protection: str = "fl",
        details: dict[str, str] | None = None,
    ) -> NoReturn:
        await self.ctx.deny(
            context,
            exc,
            caller=who,
            header=header,
            dataset=dataset,
            operation=operation,
            protection=protection,
            request_digest=digest,
            details=details,
        )

    # ------------------------------------------------------------------ open
    async def OpenTraining(  # noqa: N802 - gRPC method name
        self,
        request: training_pb2.OpenTrainingRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[training_pb2.TrainingData]:
        """Check and record the analyst's request; stream the grant and approved rows."""
        digest = request_digest(request.request)
        async with self._lock:
            job = self._jobs.get(digest)
        if job is None:
            job = await self._open(request, context, digest)
        head = self.ctx.head()
        grant = grant_to_proto(
            TrainingGrant(self.ctx.name, job.header.job_id, job.spec, len(job.y), digest)
        )
        grant.ledger.CopyFrom(
            query_pb2.LedgerHead(origin=head.origin, size=head.size, root_hash=head.root_hash)
        )
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
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        digest: str,
    ) -> _Job:
        ctx = self.ctx
        analyst: Identity | None = None
        header: RequestHeader | None = None
        spec: TrainingSpec | None = None
        try:
            caller = self._own_supernode(context)
            try:  # the analyst is not on this connection: check its certificate ourselves
                analyst = verify_peer(request.requester_cert, ctx.tls.ca, role="analyst")
            except PkiError as exc:
                raise Unauthenticated(f"requester certificate: {exc}") from exc
            header, body = open_signed(
                request.request, analyst, ctx.name, ctx.nonces, now_ms(), parse_training_body
            )
            try:
                spec = spec_from_proto(body.spec)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"invalid training spec: {exc}") from exc
            columns = {n: ctx.store.columns(n) for n in ctx.store.names()}
            decision = check_training(ctx.config, columns, analyst, header.purpose, spec)
            if decision.error is not None:
                raise decision.error
            self.budget.check(analyst.name, spec.dataset, spec.epsilon_total)
        except NodeError as exc:
            await self._refuse(
                context,
                exc,
                operation="fl_train",
                who=analyst,
                header=header,
                dataset=spec.dataset if spec else "",
                digest=digest,
                protection=spec.protection if spec else "fl",
            )
            raise AssertionError("unreachable") from exc  # abort() raises
        details = {
            "rounds": str(spec.rounds),
            "features": ",".join(spec.feature_columns),
            "label": spec.label_column,
            "model": spec.model,
            "dp": spec.dp.describe(),
            "secagg": "yes" if spec.secagg else "no",
            "supernode": str(caller),
        }
        await ctx.record(
            caller=analyst,
            header=header,
            dataset=spec.dataset,
            operation="fl_train",
            protection=spec.protection,
            decision="approved",
            reason=decision.reason,
            request_digest=digest,
            details=details,
        )
        rows = await asyncio.to_thread(ctx.store.read_rows, spec.dataset, spec.columns)
        k = ctx.config.dataset(spec.dataset).policy.min_group_size  # type: ignore[union-attr]
        try:
            data = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(spec.columns))
            if len(rows) < k:
                raise PermissionDenied(f"dataset {spec.dataset!r} has fewer than {k} rows")
            if not np.isfinite(data).all():
                raise InvalidRequest("training columns must be numeric and never null")
        except (TypeError, ValueError, NodeError) as exc:
            err = (
                exc
                if isinstance(exc, NodeError)
                else InvalidRequest("training columns must be numeric and never null")
            )
            await self._refuse(
                context,
                err,
                operation="fl_train",
                who=analyst,
                header=header,
                dataset=spec.dataset,
                digest=digest,
                protection=spec.protection,
            )
            raise AssertionError("unreachable") from exc
        job = _Job(analyst, header, spec, digest, data[:, :-1].copy(), data[:, -1].copy())
        async with self._lock:
            self._jobs[digest] = job
            while len(self._jobs) > MAX_OPEN_JOBS:
                self._jobs.popitem(last=False)
        return job

    # ----------------------------------------------------------------- rounds
    async def RecordRound(  # noqa: N802 - gRPC method name
        self,
        request: training_pb2.RecordRoundRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> training_pb2.RecordRoundResponse:
        """Record one round of an open job (charging its epsilon first when DP is on)."""
        job: _Job | None = None
        entry: RoundEntry | None = None
        operation = "fl_evaluate" if request.phase == "evaluate" else "fl_round"
        try:
            self._own_supernode(context)
            try:
                entry = round_from_proto(request)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"invalid round record: {exc}") from exc
            async with self._lock:
                job = next(
                    (j for j in self._jobs.values() if j.header.job_id == entry.job_id), None
                )
                if job is None:
                    raise NotFound(f"no open training job {entry.job_id!r} at this node")
                self._check_round(job, entry)
                epsilon = self._epsilon(job, entry)
                self.budget.charge(job.analyst.name, job.spec.dataset, epsilon)
                job.recorded.add((entry.round, entry.phase))
        except NodeError as exc:
            await self._refuse(
                context,
                exc,
                operation=operation,
                who=job.analyst if job else None,
                header=job.header if job else None,
                dataset=job.spec.dataset if job else "",
                digest=job.digest if job else "",
                protection=job.spec.protection if job else "fl",
                details=_details(entry, job),
            )
            raise AssertionError("unreachable") from exc
        index = await self.ctx.record(
            caller=job.analyst,
            header=job.header,
            dataset=job.spec.dataset,
            operation=operation,
            protection=job.spec.protection,
            decision="released",
            reason=f"round {entry.round} {entry.phase}: {entry.num_examples} examples",
            request_digest=job.digest,
            result_digest=entry.update_out_sha256,
            epsilon=epsilon,
            details=_details(entry, job),
        )
        head = self.ctx.head()
        return training_pb2.RecordRoundResponse(
            entry_index=index,
            epsilon_charged=epsilon,
            ledger=query_pb2.LedgerHead(
                origin=head.origin, size=head.size, root_hash=head.root_hash, entry_indexes=[index]
            ),
        )

    @staticmethod
    def _check_round(job: _Job, entry: RoundEntry) -> None:
        if not 1 <= entry.round <= job.spec.rounds:
            raise PermissionDenied(
                f"round {entry.round} is outside the {job.spec.rounds} round(s) approved "
                f"for job {entry.job_id!r}"
            )
        if (entry.round, entry.phase) in job.recorded:
            raise PermissionDenied(f"round {entry.round} ({entry.phase}) was already recorded")
        if entry.num_examples > len(job.y):
            raise InvalidRequest("num_examples exceeds the rows granted")
        if entry.phase == "fit" and entry.secagg != job.spec.secagg:
            raise PermissionDenied(
                f"job {entry.job_id!r} was approved {'with' if job.spec.secagg else 'without'} "
                "SecAgg+; this round does not match"
            )
        if entry.phase == "fit" and entry.secagg != job.spec.secagg:
            raise PermissionDenied(
                f"job {entry.job_id!r} was approved {'with' if job.spec.secagg else 'without'} "
                "SecAgg+; this round does not match"
            )

    @staticmethod
    def _epsilon(job: _Job, entry: RoundEntry) -> float:
        dp = job.spec.dp
        return dp.epsilon_per_round if dp.enabled and entry.phase == "fit" else 0.0


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


def add_training_service(
    server: grpc.aio.Server, node_context: NodeContext, budget: BudgetBook | None = None
) -> TrainingServicer:
    """Register the TrainingService on the node's gRPC server; return the servicer."""
    servicer = TrainingServicer(node_context, budget)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)
    return servicer


def training_service_name() -> str:
    """Full name of the service (for health checking and reflection)."""
    return training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
