"""The analyst's side of intersection-sum: relay three signed steps, decrypt one sum.

The trust model is in :mod:`datafed.psi`: the analyst holds the Paillier key, relays
blinded points and a box sealed for the ids node, and learns the intersection size and
the sum only.  Each relayed statement is checked here too (certificate, signature,
sizes, digests), so a node that answers garbage is named before the other node is asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from datafed.client._connection import Connection
from datafed.client._receipts import node_receipt
from datafed.client._transport import Transport, map_errors
from datafed.client.nodeinfo import ledger_head
from datafed.client.progress import Progress, ignore, reporting
from datafed.errors import PkiError, ProtocolError, QueryError
from datafed.hazmat import (
    HazmatError,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)
from datafed.pki.identity import identity_from_pem
from datafed.proto.v1 import common_pb2, psi_pb2, psi_pb2_grpc
from datafed.psi import (
    VALUE_BOUND,
    DpNoise,
    IdsColumn,
    IntersectionSumResult,
    InvalidPsiMessage,
    PsiJob,
    Statement,
    StatementBody,
    ValuesColumns,
    parse_ids,
    parse_values,
    verify_statement,
)
from datafed.psi import serde as psi_serde
from datafed.query.result import NodeReceipt

__all__ = ["MIN_STEP_TIMEOUT_S", "run_intersection_sum"]

#: Each step's deadline is at least this long: a large set takes minutes to blind and encrypt.
MIN_STEP_TIMEOUT_S = 600.0
_SEAL = 48
_POINT = 32
_KEYS: weakref.WeakKeyDictionary[Connection, tuple[PaillierPublicKey, PaillierPrivateKey]] = (
    weakref.WeakKeyDictionary()
)


async def _keypair(fed: Connection) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    keys = _KEYS.get(fed)
    if keys is None:
        keys = await asyncio.to_thread(generate_paillier_keypair, fed.config.paillier_bits)
        _KEYS[fed] = keys
    return keys


def _columns(
    ids: IdsColumn | tuple[str, str, str] | str,
    values: ValuesColumns | tuple[str, str, str, str] | str,
) -> tuple[IdsColumn, ValuesColumns]:
    try:
        i = parse_ids(ids) if isinstance(ids, str) else ids
        v = parse_values(values) if isinstance(values, str) else values
        i = i if isinstance(i, IdsColumn) else IdsColumn(*i)
        v = v if isinstance(v, ValuesColumns) else ValuesColumns(*v)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"invalid intersection-sum columns: {exc}") from exc
    return i, v


@dataclass(frozen=True)
class _Replies:
    """What the three steps returned: the two signed statements, the sealed box, two replies."""

    blind_statement: Statement
    exchange_statement: Statement
    sealed: bytes
    exchange: psi_pb2.PsiStepReply
    intersect: psi_pb2.PsiIntersectReply


class _Relay:
    """One job's three steps over two channels."""

    def __init__(
        self, fed: Connection, transport: Transport, job: PsiJob, purpose: str, legal_basis: str
    ) -> None:
        self.fed, self.transport, self.job = fed, transport, job
        self.purpose, self.legal_basis = purpose, legal_basis
        self.ca = fed._tls.ca
        #: Hex SHA-256 of each signed step body, as the nodes record it.
        self.digests: dict[str, str] = {}
        #: Each step's verified statement body.
        self.bodies: dict[str, StatementBody] = {}

    async def run(self, progress: Progress, timeout: float) -> _Replies:
        """Blind at the ids node, exchange at the values node, intersect at the ids node."""
        ids, values = self.job.ids.node, self.job.values.node
        stubs = {
            side: psi_pb2_grpc.PsiServiceStub(self.transport.channel(name))
            for side, name in (("ids", ids), ("values", values))
        }
        with self._step(progress, ids, "blind", timeout):
            b_st, points, _ = await self.blind(stubs["ids"], timeout)
        with self._step(progress, values, "exchange", timeout):
            e_st, sealed, e_reply = await self.exchange(stubs["values"], timeout, b_st, points)
        with self._step(progress, ids, "intersect", timeout):
            i_reply = await self.intersect(stubs["ids"], timeout, e_st, sealed)
        return _Replies(b_st, e_st, sealed, e_reply, i_reply)

    @contextmanager
    def _step(self, progress: Progress, node: str, step: str, timeout: float) -> Iterator[None]:
        """One step's gRPC errors mapped for ``node``, its start and end reported."""
        with map_errors(self.transport.endpoint(node), timeout), reporting(progress, node, step):
            yield

    def _signed(
        self, step: str, node: str, body: Callable[[common_pb2.RequestHeader], bytes]
    ) -> common_pb2.SignedRequest:
        header = self.transport.header(node, self.job.job_id, self.purpose, self.legal_basis)
        signed = self.transport.sign(body(header))
        self.digests[step] = signed.digest
        return signed.request

    def receipt(
        self,
        reply: psi_pb2.PsiStepReply | psi_pb2.PsiIntersectReply,
        statement: Statement,
        steps: tuple[str, str],
        result: bytes,
    ) -> NodeReceipt:
        """Verify a node's receipt for this job: approved at ``steps[0]``, released at ``[1]``."""
        node = reply.node
        try:
            key = identity_from_pem(statement.certificate_pem).signing_key
        except PkiError as exc:
            raise ProtocolError(f"node {node!r}: receipt does not verify") from exc
        return node_receipt(
            node,
            key,
            reply.receipt if reply.HasField("receipt") else None,
            job_id=self.job.job_id,
            request_digests=[self.digests[s] for s in steps],
            decisions=["approved", "released"],
            result_digest=hashlib.sha256(result).hexdigest(),
        )

    def _check(self, st: Statement, node: str, step: Any) -> StatementBody:
        try:
            body = verify_statement(st, self.ca, node=node, job_id=self.job.job_id, step=step)
        except InvalidPsiMessage as exc:
            raise ProtocolError(f"node {node!r} returned a statement that does not verify") from exc
        if body.job_digest != self.job.digest():
            raise ProtocolError(f"node {node!r} signed another job")
        return body

    async def _download(
        self, call: AsyncIterable[psi_pb2.PsiDownload], node: str, step: str
    ) -> tuple[Statement, StatementBody, bytes, psi_pb2.PsiStepReply]:
        frames = aiter(call)
        first = await anext(frames, None)
        if first is None or first.WhichOneof("frame") != "reply":
            raise ProtocolError(f"node {node!r} sent no step reply")
        statement, info = psi_serde.reply_from_proto(first.reply)
        body = self._check(statement, node, step)
        self.bodies[step] = body
        width = (2 * self.job.paillier_n.bit_length() + 7) // 8
        expected = body.count * _POINT
        if step == "exchange":
            expected += _SEAL + body.pairs * (_POINT + width)
        if info.size != expected or info.sha256 != body.payload_digest:
            raise ProtocolError(f"node {node!r} described a payload its statement does not cover")
        recv = psi_serde.Receiver(info, limit=expected)
        try:
            async for frame in frames:
                recv.add(frame.chunk)
            return statement, body, recv.finish(), first.reply
        except ValueError as exc:
            raise ProtocolError(f"node {node!r}: {exc}") from exc

    async def blind(
        self, stub: psi_pb2_grpc.PsiServiceStub, timeout: float
    ) -> tuple[Statement, bytes, psi_pb2.PsiStepReply]:
        node = self.job.ids.node
        signed = self._signed("blind", node, lambda h: psi_serde.blind_body(h, self.job))
        st, _, points, reply = await self._download(
            stub.Blind(signed, timeout=timeout), node, "blind"
        )
        return st, points, reply

    async def exchange(
        self, stub: psi_pb2_grpc.PsiServiceStub, timeout: float, peer: Statement, points: bytes
    ) -> tuple[Statement, bytes, psi_pb2.PsiStepReply]:
        node = self.job.values.node
        signed = self._signed(
            "exchange", node, lambda h: psi_serde.relay_body("exchange", h, self.job, peer, points)
        )
        call = stub.Exchange(psi_serde.upload_frames(signed, points), timeout=timeout)
        st, body, sealed, reply = await self._download(call, node, "exchange")
        if body.peer_digest != peer.digest:
            raise ProtocolError(f"node {node!r} answered another blind statement")
        return st, sealed, reply

    async def intersect(
        self, stub: psi_pb2_grpc.PsiServiceStub, timeout: float, peer: Statement, sealed: bytes
    ) -> psi_pb2.PsiIntersectReply:
        node = self.job.ids.node
        signed = self._signed(
            "intersect",
            node,
            lambda h: psi_serde.relay_body("intersect", h, self.job, peer, sealed),
        )
        reply: psi_pb2.PsiIntersectReply = await stub.Intersect(
            psi_serde.upload_frames(signed, sealed), timeout=timeout
        )
        if reply.node != node or reply.job_id != self.job.job_id:
            raise ProtocolError(f"node {node!r} answered for another node or job")
        return reply


def _open_sum(
    keys: tuple[PaillierPublicKey, PaillierPrivateKey],
    reply: psi_pb2.PsiIntersectReply,
    noise: DpNoise | None,
) -> int:
    pub, priv = keys
    try:
        total = priv.decrypt_signed(pub.ciphertext_from_bytes(bytes(reply.encrypted_sum)))
    except HazmatError as exc:
        raise ProtocolError(f"node {reply.node!r} returned an invalid encrypted sum") from exc
    # Under DP the sum carries noise and the size is noisy: allow 64 noise scales more
    # (a discrete Laplace draw exceeds that with probability below e^-64).
    slack = (VALUE_BOUND + 64 * noise.sum_scale) if noise is not None else 0
    if abs(total) >= max(reply.intersection_size, 1) * VALUE_BOUND + slack:
        raise ProtocolError(f"node {reply.node!r} returned a sum out of range")
    return total


async def run_intersection_sum(
    fed: Connection,
    ids: IdsColumn | tuple[str, str, str] | str,
    values: ValuesColumns | tuple[str, str, str, str] | str,
    *,
    purpose: str,
    legal_basis: str = "",
    job_id: str,
    timeout_s: float | None = None,
    progress: Progress = ignore,
) -> IntersectionSumResult:
    """Run one intersection-sum job (see :meth:`Federation.aintersection_sum`).

    Parameters
    ----------
    fed
        The analyst's federation (its key, certificate and node addresses).
    ids
        ``(node, dataset, id_column)`` or ``"node:dataset:id_column"``.
    values
        ``(node, dataset, id_column, value_column)`` or the same joined by ``:``.
    purpose, legal_basis
        Declared to, and recorded by, both nodes.
    job_id
        The job id.
    timeout_s
        Deadline of each step (default: the federation's, at least 600 s).
    progress
        Called at the start and end of each step (key generation, blind, exchange,
        intersect).

    Returns
    -------
    IntersectionSumResult
        The intersection size, the sum and both ledger heads.
    """
    if not purpose:
        raise QueryError("a purpose is required")
    i_col, v_col = _columns(ids, values)
    names = {n.name for n in fed.config.nodes}
    for name in (i_col.node, v_col.node):
        if name not in names:
            raise QueryError(f"node {name!r} is not in the federation file")
    with reporting(progress, "", "paillier key"):
        keys = await _keypair(fed)
    try:
        job = PsiJob(job_id, i_col, v_col, keys[0].n, fed.config.fixed_point_bits)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    timeout = timeout_s or max(fed.config.timeout_s, MIN_STEP_TIMEOUT_S)
    async with fed.transport() as transport:
        relay = _Relay(fed, transport, job, purpose, legal_basis)
        replies = await relay.run(progress, timeout)
    receipts = (
        relay.receipt(
            replies.intersect,
            replies.blind_statement,
            ("blind", "intersect"),
            bytes(replies.intersect.encrypted_sum),
        ),
        relay.receipt(
            replies.exchange, replies.exchange_statement, ("exchange", "exchange"), replies.sealed
        ),
    )
    epsilon, noise = _dp_terms(relay.bodies["exchange"], receipts)
    total = _open_sum(keys, replies.intersect, noise)
    bits = job.fixed_point_bits
    sd_sum, sd_size = noise.stddevs(bits) if noise is not None else (0.0, 0.0)
    return IntersectionSumResult(
        intersection_size=replies.intersect.intersection_size,
        sum=total / (1 << bits),
        sum_fixed=total,
        fixed_point_bits=bits,
        job_id=job.job_id,
        ledgers=(
            ledger_head(i_col.node, replies.intersect.ledger),
            ledger_head(v_col.node, replies.exchange.ledger),
        ),
        receipts=receipts,
        epsilon=epsilon,
        noise_stddev=sd_sum,
        size_noise_stddev=sd_size,
    )


def _dp_terms(
    values: StatementBody, receipts: tuple[NodeReceipt, ...]
) -> tuple[dict[str, float], DpNoise | None]:
    """Epsilon per node from its verified entries, and the noise they imply.

    The ids node calibrates the noise to the smallest epsilon of the DP nodes and to the
    bound the values node stated (see :mod:`datafed.psi._dp`).
    """
    epsilon: dict[str, float] = {}
    for receipt in receipts:  # charged at admission (``approved``); older nodes: ``released``
        for r in receipt.records:
            if r.epsilon > 0:
                epsilon[r.node] = epsilon.get(r.node, 0.0) + r.epsilon
    if not epsilon:
        if values.dp_sensitivity:
            raise ProtocolError("the nodes recorded no epsilon for a noisy release")
        return {}, None
    if not values.dp_sensitivity:
        raise ProtocolError(f"node {values.node!r} stated no bound for a noisy release")
    smallest = min(Fraction(repr(e)) for e in epsilon.values())
    return epsilon, DpNoise(str(smallest), values.dp_sensitivity)
