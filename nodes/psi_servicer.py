"""The node's PsiService: its side of an intersection-sum, one signed RPC per step.

Each step follows the query servicer's order (DESIGN §4): peer certificate and signed
request through :mod:`nodes.gate`; the job, the relayed statement of the other node and
the declared payload size checked, and the upload received, before anything is recorded;
``approved`` or ``denied`` written to the ledger before the dataset is read; the
computation; ``released`` with the digest of what leaves the node.  Under differential privacy
(:mod:`datafed.psi._dp`) each DP node checks its budget of (requester, dataset) before
approving, charges its epsilon after computing and records it on ``released``; the
values node clamps and states its bound, the ids node adds the noise.  The ids side records
``approved`` at Blind and ``released`` at Intersect (keeping the job in a bounded,
expiring table between the two); the values side records both in Exchange.  Any failure
after approval is recorded as ``denied`` and nothing is released.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from datafed.pki import Identity
from datafed.proto.v1 import common_pb2, psi_pb2, psi_pb2_grpc, query_pb2
from datafed.psi import (
    DpNoise,
    IdsParty,
    InvalidPsiMessage,
    Pool,
    PsiJob,
    Statement,
    StatementBody,
    clamp_pairs,
    exchange,
    fixed_bound,
    identifier_set,
    sign_statement,
    value_pairs,
    verify_statement,
)
from datafed.psi import serde as psi_serde
from datafed.signing import RequestHeader, now_ms
from nodes.config import DpPolicy
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, PermissionDenied, status_of
from nodes.gate import open_signed, peer_identity, request_digest
from nodes.psi_policy import PendingJob, PendingJobs, check_psi

__all__ = ["MAX_SET_SIZE", "PsiServicer", "add_psi_service"]

log = logging.getLogger("datafed.node")
#: Most points a relayed set may hold (2^21): bounds memory and work per job.
MAX_SET_SIZE = 1 << 21
_POINT = 32
_SEAL = 48
OPERATION = "intersection_sum"
PROTECTION = "ecdh-psi+paillier"
M = TypeVar("M", bound=Message)


def _parser(cls: type[M]) -> Callable[[bytes], tuple[common_pb2.RequestHeader, M]]:
    def parse(body: bytes) -> tuple[common_pb2.RequestHeader, M]:
        msg = cls.FromString(body)
        return msg.header, msg  # type: ignore[attr-defined]

    return parse


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _match(peer: StatementBody, job: PsiJob, payload: bytes, side: str) -> None:
    """Check that a relayed payload is the one the peer's statement covers."""
    if peer.job_digest != job.digest():
        raise InvalidRequest(f"the {side} node's statement is for another job")
    if hashlib.sha256(payload).digest() != peer.payload_digest:
        raise InvalidRequest(f"the relayed payload does not match the {side} node's statement")


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


class _Call:
    """What one step learned about its caller, for the ledger."""

    def __init__(self, signed: common_pb2.SignedRequest) -> None:
        self.digest = request_digest(signed)
        self.identity: Identity | None = None
        self.header: RequestHeader | None = None
        self.dataset = ""
        self.details: dict[str, str] = {}


class PsiServicer(psi_pb2_grpc.PsiServiceServicer):
    """gRPC PsiService of one agency node."""

    def __init__(self, ctx: NodeContext, pool: Pool | None = None) -> None:
        self.ctx = ctx
        self.pool = pool or Pool()
        self.jobs = PendingJobs()

    # ----------------------------------------------------------------- helpers
    def _open(
        self, call: _Call, signed: common_pb2.SignedRequest, cls: type[M], context: Any
    ) -> tuple[RequestHeader, psi_serde.StepRequest]:
        call.identity = peer_identity(context)
        call.header, msg = open_signed(
            signed, call.identity, self.ctx.name, self.ctx.nonces, now_ms(), _parser(cls)
        )
        try:
            return call.header, psi_serde.step_from_proto(msg)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"malformed intersection-sum job: {exc}") from exc

    def _check(self, call: _Call, dataset: str, columns: list[str]) -> str:
        assert call.identity is not None and call.header is not None
        call.dataset = dataset
        names = self.ctx.store.names()
        exposed = self.ctx.store.columns(dataset) if dataset in names else None
        return check_psi(
            self.ctx.config, exposed, call.identity, call.header.purpose, dataset, columns
        )

    def _dp(self, call: _Call, dataset: str) -> DpPolicy | None:
        """The dataset's DP section; with one, refuse early if the budget cannot pay."""
        assert call.identity is not None
        dp = self.ctx.config.dataset(dataset).policy.dp  # type: ignore[union-attr]
        if dp is not None:
            self.ctx.budget.check(call.identity.name, dataset, dp.epsilon_per_query)
        return dp

    def _charge(self, call: _Call, dp: DpPolicy | None) -> float:
        """Spend this node's epsilon for the job (raises BudgetExhausted); return it."""
        if dp is None:
            return 0.0
        assert call.identity is not None
        self.ctx.budget.charge(call.identity.name, call.dataset, dp.epsilon_per_query)
        return dp.epsilon_per_query

    def _noise(self, dp: DpPolicy | None, peer: StatementBody, dataset: str) -> DpNoise | None:
        """The noise this ids node adds: calibrated to the smaller of the two epsilons."""
        if not peer.dp_sensitivity:
            if dp is not None:
                raise PermissionDenied(
                    f"dataset {dataset!r} requires differential privacy but the values node "
                    "states no bound on its values; intersection_sum is refused"
                )
            return None
        try:
            theirs = Fraction(peer.dp_epsilon)
            if not 0 < theirs <= 10:
                raise ValueError
        except (ValueError, ZeroDivisionError) as exc:
            raise InvalidRequest("the values node stated an invalid epsilon") from exc
        eps = min(theirs, Fraction(repr(dp.epsilon_per_query))) if dp is not None else theirs
        return DpNoise(str(eps), peer.dp_sensitivity)

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

    async def _record(
        self, call: _Call, decision: str, reason: str, result: str = "", epsilon: float = 0.0
    ) -> int:
        return await self.ctx.record(
            caller=call.identity,
            header=call.header,
            dataset=call.dataset,
            operation=OPERATION,
            protection=PROTECTION,
            decision=decision,
            reason=reason,
            request_digest=call.digest,
            result_digest=result,
            epsilon=epsilon,
            details=call.details,
        )

    async def _deny(self, context: Any, call: _Call, exc: NodeError) -> None:
        code, message = status_of(exc)
        await self._record(call, "denied", f"{code.name}: {message}")
        await context.abort(code, message)

    def _head(self, *indexes: int) -> query_pb2.LedgerHead:
        head = self.ctx.head()
        return query_pb2.LedgerHead(
            origin=head.origin, size=head.size, root_hash=head.root_hash, entry_indexes=indexes
        )

    def _sign(self, body: StatementBody) -> Statement:
        return sign_statement(body, self.ctx.tls.cert, self.ctx.signing_key)

    async def _first(
        self, frames: AsyncIterator[psi_pb2.PsiUpload]
    ) -> common_pb2.SignedRequest | None:
        frame = await anext(frames, None)
        if frame is None or frame.WhichOneof("frame") != "request":
            return None
        return frame.request

    # ------------------------------------------------------------------- steps
    async def Blind(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Any
    ) -> AsyncIterator[psi_pb2.PsiDownload]:
        """Step 1, ids side: blind the identifier column."""
        call = _Call(request)
        call.details = {"role": "ids", "step": "blind"}
        try:
            header, step = self._open(call, request, psi_pb2.PsiBlindRequest, context)
            job = step.job
            if job.ids.node != self.ctx.name:
                raise InvalidRequest(f"node {self.ctx.name!r} is not the ids side of this job")
            call.details["peer"] = job.values.node
            reason = self._check(call, job.ids.dataset, [job.ids.column])
            self._dp(call, job.ids.dataset)
            self.jobs.ensure_room(header.requester, job.job_id)
        except NodeError as exc:
            await self._deny(context, call, exc)
            return
        approved = await self._record(call, "approved", reason)
        try:
            rows = await asyncio.to_thread(
                self.ctx.store.read_rows, job.ids.dataset, [job.ids.column]
            )
            party = IdsParty(job, identifier_set(r[0] for r in rows), self.pool)
            body, points = await asyncio.to_thread(party.blind)
            statement = self._sign(body)
            self.jobs.put(
                job.job_id,
                PendingJob(party, header.requester, header.purpose, statement.digest, approved),
            )
        except Exception as exc:
            await self._deny(context, call, _node_error(exc, "identifiers"))
            return
        frames = psi_serde.download_frames(
            self.ctx.name, job.job_id, statement, self._head(approved), points
        )
        for frame in frames:
            yield frame

    async def Exchange(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[psi_pb2.PsiUpload], context: Any
    ) -> AsyncIterator[psi_pb2.PsiDownload]:
        """Step 2, values side: double-blind the relayed points, seal own pairs for the peer."""
        signed = await self._first(request_iterator)
        call = _Call(signed or common_pb2.SignedRequest())
        call.details = {"role": "values", "step": "exchange"}
        try:
            if signed is None:
                raise InvalidRequest("the first frame must carry the signed request")
            _, step = self._open(call, signed, psi_pb2.PsiExchangeRequest, context)
            job = step.job
            if job.values.node != self.ctx.name:
                raise InvalidRequest(f"node {self.ctx.name!r} is not the values side of this job")
            call.details["peer"] = job.ids.node
            cols = [job.values.id_column, job.values.value_column]
            reason = self._check(call, job.values.dataset, cols)
            dp = self._dp(call, job.values.dataset)
            if dp is not None and job.values.value_column not in dp.bounds:
                raise PermissionDenied(
                    f"column {job.values.value_column!r} has no DP bounds in "
                    f"{job.values.dataset!r}'s policy"
                )
            peer = self._verify(step.peer, job, job.ids.node, "blind")
            if peer.count > MAX_SET_SIZE:
                raise InvalidRequest(f"set of {peer.count} exceeds the limit of {MAX_SET_SIZE}")
            assert step.payload is not None
            points = await self._receive(request_iterator, step.payload, peer.count * _POINT)
            _match(peer, job, points, "ids")
        except NodeError as exc:
            await self._deny(context, call, exc)
            return
        approved = await self._record(call, "approved", reason)
        try:
            rows = await asyncio.to_thread(self.ctx.store.read_rows, job.values.dataset, cols)
            pairs = value_pairs(rows, job.fixed_point_bits)
            policy = self.ctx.config.dataset(job.values.dataset).policy  # type: ignore[union-attr]
            stated: dict[str, Any] = {}
            if dp is not None:
                bounds = dp.bounds[job.values.value_column]
                pairs = clamp_pairs(pairs, bounds, job.fixed_point_bits)
                stated = {
                    "dp_sensitivity": fixed_bound(bounds, job.fixed_point_bits),
                    "dp_epsilon": repr(dp.epsilon_per_query),
                }
            assert step.peer is not None
            body, sealed = await asyncio.to_thread(
                exchange,
                job,
                pairs,
                peer,
                step.peer.digest,
                points,
                min_intersection=policy.min_group_size,
                pool=self.pool,
                **stated,
            )
            statement = self._sign(body)
            epsilon = self._charge(call, dp)
        except Exception as exc:
            await self._deny(context, call, _node_error(exc, "blinded points"))
            return
        call.details["pairs"] = str(body.pairs)
        released = await self._record(
            call,
            "released",
            f"{body.pairs} encrypted value(s) sealed for {job.ids.node}",
            _sha(sealed),
            epsilon,
        )
        receipt = await asyncio.to_thread(self.ctx.ledger.receipt, [approved, released])
        frames = psi_serde.download_frames(
            self.ctx.name, job.job_id, statement, self._head(approved, released), sealed, receipt
        )
        for frame in frames:
            yield frame

    async def Intersect(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[psi_pb2.PsiUpload], context: Any
    ) -> psi_pb2.PsiIntersectReply:
        """Step 3, ids side: open the sealed box, intersect, return the encrypted sum."""
        signed = await self._first(request_iterator)
        call = _Call(signed or common_pb2.SignedRequest())
        call.details = {"role": "ids", "step": "intersect"}
        try:
            if signed is None:
                raise InvalidRequest("the first frame must carry the signed request")
            header, step = self._open(call, signed, psi_pb2.PsiIntersectRequest, context)
            job = step.job
            call.dataset = job.ids.dataset
            pending = self.jobs.pop(header.requester, job.job_id)
            if pending.party.job != job:
                raise InvalidRequest("the job differs from the one this node blinded for")
            if header.purpose != pending.purpose:
                raise PermissionDenied("the purpose differs from the one approved at step 1")
            call.details["peer"] = job.values.node
            self._check(call, job.ids.dataset, [job.ids.column])
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
            policy = self.ctx.config.dataset(job.ids.dataset).policy  # type: ignore[union-attr]
            noise = self._noise(self._dp(call, job.ids.dataset), peer, job.ids.dataset)
            sum_noise, size_noise = noise.draw() if noise is not None else (0, 0)
            count, enc = await asyncio.to_thread(
                pending.party.intersect,
                peer,
                pending.blind_digest,
                sealed,
                policy.min_group_size,
                sum_noise,
            )
            # The noisy size is post-processed to be non-negative (still DP).
            count = max(0, count + size_noise)
            epsilon = self._charge(call, policy.dp)
        except Exception as exc:
            await self._deny(context, call, _node_error(exc, "sealed pairs"))
            raise AssertionError("unreachable") from exc  # abort() raises
        call.details["intersection_size"] = str(count)
        noisy = " (noisy)" if noise is not None else ""
        released = await self._record(
            call,
            "released",
            f"encrypted sum over {count}{noisy} identifier(s)",
            _sha(enc),
            epsilon,
        )
        indexes = [pending.approved_index, released]
        receipt = await asyncio.to_thread(self.ctx.ledger.receipt, indexes)
        return psi_serde.intersect_reply(
            self.ctx.name, job.job_id, count, enc, self._head(*indexes), receipt
        )


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
