"""The node's PsiService: its side of an intersection-sum, one signed RPC per step.

Every step runs the node's one pipeline (:mod:`nodes.rpc`): peer certificate and signed
request; the job, the relayed statement of the other node and the declared payload size
checked, and the upload received, before anything is admitted; the policy engine admits
the use (``approved``, its epsilon charged under DP) before the dataset is read; the
computation; ``released`` with the digest of what leaves the node. Under differential
privacy each DP node spends its epsilon at admission; what leaves goes through
:mod:`nodes.release.psi`: the values node clamps and states its bound, the ids node adds
the noise, and neither refuses on the rows. The ids side is admitted at
Blind and releases at Intersect (keeping the job in a bounded, expiring table between the
two, :mod:`nodes.psi.jobs`); the values side is admitted and releases in Exchange. Any
failure after admission is recorded as ``denied`` and nothing is released.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from datafed.proto.v1 import common_pb2, psi_pb2, psi_pb2_grpc
from datafed.psi import (
    IdsParty,
    InvalidPsiMessage,
    Pool,
    PsiJob,
    Statement,
    StatementBody,
    exchange,
    sign_statement,
    verify_statement,
)
from datafed.psi import serde as psi_serde
from datafed.wire.signing import RequestHeader
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, PermissionDenied
from nodes.limits import check_key_size
from nodes.policy import Grant, Use
from nodes.psi.jobs import PendingJob, PendingJobs
from nodes.release.psi import draw, ids_min_intersection, ids_noise, read_identifiers, read_values
from nodes.rpc import Context, SignedCall, parser, signed_call

__all__ = ["MAX_SET_SIZE", "PsiServicer", "add_psi_service"]

log = logging.getLogger("datafed.node")
#: Most points a relayed set may hold (2^21): bounds memory and work per job.
MAX_SET_SIZE = 1 << 21
_POINT = 32
_SEAL = 48
OPERATION = "intersection_sum"
PROTECTION = "ecdh-psi+paillier"
M = TypeVar("M", bound=Message)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _match(peer: StatementBody, job: PsiJob, payload: bytes, side: str) -> None:
    """Check that a relayed payload is the one the peer's statement covers."""
    if peer.job_digest != job.digest():
        raise InvalidRequest(f"the {side} node's statement is for another job")
    if hashlib.sha256(payload).digest() != peer.payload_digest:
        raise InvalidRequest(f"the relayed payload does not match the {side} node's statement")


@contextmanager
def _translated(relayed: str) -> Iterator[None]:
    """Translate a failure of the computation after admission into the error to send."""
    try:
        yield
    except NodeError:
        raise
    except Exception as exc:
        raise _node_error(exc, relayed) from exc


def _node_error(exc: Exception, relayed: str) -> NodeError:
    """Translate a failure after the request was accepted into the error to send."""
    if isinstance(exc, NodeError):
        return exc
    if isinstance(exc, InvalidPsiMessage):
        return InvalidRequest(f"the relayed {relayed} failed verification")
    if isinstance(exc, PermissionError):
        return PermissionDenied(str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        return InvalidRequest(str(exc))
    log.exception("intersection-sum step failed", exc_info=exc)
    return NodeError("internal error during intersection-sum")


class PsiServicer(psi_pb2_grpc.PsiServiceServicer):
    """gRPC PsiService of one agency node."""

    def __init__(self, ctx: NodeContext, pool: Pool | None = None) -> None:
        self.ctx = ctx
        self.pool = pool or Pool()
        lim = ctx.config.limits
        self.jobs = PendingJobs(
            lim.max_pending_intersections, lim.max_pending_intersections_per_requester
        )

    # ----------------------------------------------------------------- helpers
    def _open(self, call: SignedCall, cls: type[M]) -> tuple[RequestHeader, psi_serde.StepRequest]:
        msg = call.open(parser(cls))
        assert call.header is not None
        try:
            return call.header, psi_serde.step_from_proto(msg)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"malformed intersection-sum job: {exc}") from exc

    def _use(self, call: SignedCall, dataset: str, columns: list[str], summed: list[str]) -> Use:
        assert call.identity is not None and call.header is not None
        return Use(
            operation="intersection_sum",
            requester=call.identity,
            header=call.header,
            dataset=dataset,
            columns=frozenset(columns),
            protection=PROTECTION,
            summed=frozenset(summed),
        )

    async def _admit(
        self, call: SignedCall, dataset: str, columns: list[str], summed: list[str] | tuple[()]
    ) -> Grant:
        return await call.admit(self._use(call, dataset, columns, list(summed)))

    def _verify(self, st: Statement | None, job: PsiJob, node: str, step: Any) -> StatementBody:
        try:
            assert st is not None
            return verify_statement(st, self.ctx.tls.ca, node=node, job_id=job.job_id, step=step)
        except InvalidPsiMessage as exc:
            raise InvalidRequest(f"the relayed statement of node {node!r} does not verify") from exc

    async def _receive(
        self, frames: AsyncIterator[psi_pb2.PsiUpload], info: psi_serde.PayloadInfo, size: int
    ) -> bytes:
        if info.size != size:
            raise InvalidRequest(f"payload must be {size} bytes for this job, got {info.size}")
        try:
            recv = psi_serde.Receiver(info, limit=size)
            async for frame in frames:
                if frame.WhichOneof("frame") != "chunk":
                    raise ValueError("expected payload chunks after the request")
                recv.add(frame.chunk)
            return recv.finish()
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    def _sign(self, body: StatementBody) -> Statement:
        return sign_statement(body, self.ctx.tls.cert, self.ctx.signing_key)

    async def _first(
        self, frames: AsyncIterator[psi_pb2.PsiUpload]
    ) -> common_pb2.SignedRequest | None:
        frame = await anext(frames, None)
        if frame is None or frame.WhichOneof("frame") != "request":
            return None
        return frame.request

    @asynccontextmanager
    async def _step(
        self,
        context: Context,
        signed: common_pb2.SignedRequest | None,
        cls: type[M],
        role: str,
        step: str,
    ) -> AsyncIterator[tuple[SignedCall, RequestHeader, psi_serde.StepRequest]]:
        """One step's signed call, opened: this node's ``role`` dataset and the job digest."""
        async with signed_call(self.ctx, context, signed, OPERATION, protection=PROTECTION) as call:
            call.details.update(role=role, step=step)
            if signed is None:
                raise InvalidRequest("the first frame must carry the signed request")
            header, req = self._open(call, cls)
            job = req.job
            call.dataset = job.ids.dataset if role == "ids" else job.values.dataset
            call.details["statement"] = job.digest().hex()  # the job both nodes sign
            yield call, header, req

    def _our_side(self, call: SignedCall, job: PsiJob, role: str) -> None:
        """This node must be the job's ``role`` side; the other side is the peer."""
        mine, peer = (job.ids, job.values) if role == "ids" else (job.values, job.ids)
        if mine.node != self.ctx.name:
            raise InvalidRequest(f"node {self.ctx.name!r} is not the {role} side of this job")
        call.details["peer"] = peer.node

    async def _seal(
        self,
        call: SignedCall,
        grant: Grant,
        step: psi_serde.StepRequest,
        peer: StatementBody,
        points: bytes,
    ) -> tuple[StatementBody, bytes]:
        """The values side's work: its pairs (clamped under DP), sealed for the ids node."""
        job = step.job
        pairs, stated, minimum = await call.compute(read_values, self.ctx.store, job, grant.policy)
        assert step.peer is not None
        return await call.compute(
            functools.partial(
                exchange,
                job,
                pairs,
                peer,
                step.peer.digest,
                points,
                min_intersection=minimum,
                pool=self.pool,
                **stated,
            )
        )

    # ------------------------------------------------------------------- steps
    async def Blind(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> AsyncIterator[psi_pb2.PsiDownload]:
        """Step 1, ids side: blind the identifier column."""
        ctx, msg = self.ctx, psi_pb2.PsiBlindRequest
        async with self._step(context, request, msg, "ids", "blind") as (call, header, step):
            job = step.job
            self._our_side(call, job, "ids")
            self.jobs.ensure_room(header.requester, job.job_id)
            grant = await self._admit(call, job.ids.dataset, [job.ids.column], ())
            with _translated("identifiers"):
                ids = await call.compute(read_identifiers, ctx.store, job)
                party = IdsParty(job, ids, self.pool)
                body, points = await call.compute(party.blind)
                statement = self._sign(body)
                self.jobs.put(
                    job.job_id,
                    PendingJob(
                        party, header.requester, header.purpose, statement.digest, grant.index
                    ),
                )
            frames = psi_serde.download_frames(ctx.name, job.job_id, statement, call.head(), points)
        for frame in frames:
            yield frame

    async def Exchange(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[psi_pb2.PsiUpload], context: Context
    ) -> AsyncIterator[psi_pb2.PsiDownload]:
        """Step 2, values side: double-blind the relayed points, seal own pairs for the peer."""
        ctx, msg = self.ctx, psi_pb2.PsiExchangeRequest
        signed = await self._first(request_iterator)
        async with self._step(context, signed, msg, "values", "exchange") as (call, _, step):
            job = step.job
            self._our_side(call, job, "values")
            cols = [job.values.id_column, job.values.value_column]
            ctx.policy.check(self._use(call, job.values.dataset, cols, [cols[1]]))
            # This side encrypts under the analyst's key: only the sizes the policy allows.
            check_key_size(
                job.paillier_n.bit_length(),
                ctx.policy.policy(job.values.dataset),
                job.values.dataset,
            )
            peer = self._verify(step.peer, job, job.ids.node, "blind")
            if peer.count > MAX_SET_SIZE:
                raise InvalidRequest(f"set of {peer.count} exceeds the limit of {MAX_SET_SIZE}")
            assert step.payload is not None and step.peer is not None
            points = await self._receive(request_iterator, step.payload, peer.count * _POINT)
            _match(peer, job, points, "ids")
            grant = await self._admit(call, job.values.dataset, cols, [cols[1]])
            with _translated("blinded points"):
                body, sealed = await self._seal(call, grant, step, peer, points)
                statement = self._sign(body)
            call.details["pairs"] = str(body.pairs)
            await call.release(
                _sha(sealed), f"{body.pairs} encrypted value(s) sealed for {job.ids.node}"
            )
            receipt = await call.proof()
            frames = psi_serde.download_frames(
                ctx.name, job.job_id, statement, call.head(), sealed, receipt
            )
        for frame in frames:
            yield frame

    async def Intersect(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[psi_pb2.PsiUpload], context: Context
    ) -> psi_pb2.PsiIntersectReply:
        """Step 3, ids side: open the sealed box, intersect, return the encrypted sum."""
        ctx, msg = self.ctx, psi_pb2.PsiIntersectRequest
        signed = await self._first(request_iterator)
        async with self._step(context, signed, msg, "ids", "intersect") as (call, header, step):
            job = step.job
            pending = self.jobs.pop(header.requester, job.job_id)
            if pending.party.job != job:
                raise InvalidRequest("the job differs from the one this node blinded for")
            if header.purpose != pending.purpose:
                raise PermissionDenied("the purpose differs from the one approved at step 1")
            call.details["peer"] = job.values.node
            ctx.policy.check(self._use(call, job.ids.dataset, [job.ids.column], []))
            peer = self._verify(step.peer, job, job.values.node, "exchange")
            if peer.pairs > MAX_SET_SIZE:
                raise InvalidRequest(f"set of {peer.pairs} exceeds the limit of {MAX_SET_SIZE}")
            width = (2 * job.paillier_n.bit_length() + 7) // 8
            size = _SEAL + peer.count * _POINT + peer.pairs * (_POINT + width)
            assert step.payload is not None
            sealed = await self._receive(request_iterator, step.payload, size)
            _match(peer, job, sealed, "values")
            if peer.peer_digest != pending.blind_digest:
                raise InvalidRequest("the values node answered another blind statement")
            policy = ctx.policy.policy(job.ids.dataset)
            noise = ids_noise(policy.dp, peer, job.ids.dataset)
            release = draw(noise)
            with _translated("sealed pairs"):
                count, enc = await call.compute(
                    pending.party.intersect,
                    peer,
                    pending.blind_digest,
                    sealed,
                    ids_min_intersection(policy, noise),
                    release.sum_noise,
                )
            count = release.size(count)
            call.details["intersection_size"] = str(count)
            call.indexes.append(pending.approved_index)
            noisy = " (noisy)" if noise is not None else ""
            await call.release(_sha(enc), f"encrypted sum over {count}{noisy} identifier(s)")
            receipt = await call.proof()
            return psi_serde.intersect_reply(ctx.name, job.job_id, count, enc, call.head(), receipt)
        raise AssertionError("unreachable")  # signed_call aborts on every failure


def add_psi_service(server: grpc.aio.Server, ctx: NodeContext) -> None:
    """Register the PsiService of the node described by ``ctx`` on ``server``.

    Parameters
    ----------
    server
        The node's gRPC server (not yet started).
    ctx
        The node's shared state.
    """
    psi_pb2_grpc.add_PsiServiceServicer_to_server(PsiServicer(ctx), server)
