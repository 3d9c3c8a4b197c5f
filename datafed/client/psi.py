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
from collections.abc import AsyncIterable, Awaitable, Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import grpc

from audit.errors import InvalidReceipt
from audit.receipts import verify_receipt
from datafed.client.config import NodeEndpoint
from datafed.errors import PkiError, ProtocolError, QueryError
from datafed.hazmat import (
    HazmatError,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)
from datafed.pki import identity_from_pem
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
from datafed.serde import header_to_proto
from datafed.signing import new_header, sign_body
from datafed.tls import channel_credentials

if TYPE_CHECKING:
    from datafed.client.federation import Federation

__all__ = ["MIN_STEP_TIMEOUT_S", "run_intersection_sum"]

#: Each step's deadline is at least this long: a large set takes minutes to blind and encrypt.
MIN_STEP_TIMEOUT_S = 600.0
_MAX_MESSAGE = 4 * psi_serde.CHUNK_BYTES
_SEAL = 48
_POINT = 32
_KEYS: weakref.WeakKeyDictionary[Federation, tuple[PaillierPublicKey, PaillierPrivateKey]] = (
    weakref.WeakKeyDictionary()
)


def _channel(address: str, creds: grpc.ChannelCredentials, name: str) -> grpc.aio.Channel:
    options = [
        ("grpc.ssl_target_name_override", name),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
    ]
    return grpc.aio.secure_channel(address, creds, options=options)


async def _keypair(fed: Federation) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
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


class _Relay:
    """One job's three steps over two channels."""

    def __init__(self, fed: Federation, job: PsiJob, purpose: str, legal_basis: str) -> None:
        self.fed, self.job = fed, job
        self.purpose, self.legal_basis = purpose, legal_basis
        self.ca = fed._tls.ca
        #: Hex SHA-256 of each signed step body, as the nodes record it.
        self.digests: dict[str, str] = {}
        #: Each step's verified statement body.
        self.bodies: dict[str, StatementBody] = {}

    def _signed(
        self, step: str, node: str, body: Callable[[common_pb2.RequestHeader], bytes]
    ) -> common_pb2.SignedRequest:
        header = new_header(
            self.fed.config.analyst, node, self.job.job_id, self.purpose, self.legal_basis
        )
        data = body(header_to_proto(header))
        self.digests[step] = hashlib.sha256(data).hexdigest()
        return common_pb2.SignedRequest(body=data, signature=sign_body(data, self.fed._signing_key))

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
            receipt = psi_serde.receipt_of(reply)
            if receipt is None:
                raise ProtocolError(f"node {node!r} sent no receipt")
            key = identity_from_pem(statement.certificate_pem).signing_key
            records = verify_receipt(receipt, f"datafed/ledger/{node}", key)
        except (InvalidReceipt, ValueError, PkiError) as exc:
            raise ProtocolError(f"node {node!r}: receipt does not verify") from exc
        ok = (
            [r.decision for r in records] == ["approved", "released"]
            and all(r.node == node and r.job_id == self.job.job_id for r in records)
            and all(r.operation == "intersection_sum" for r in records)
            and [r.request_digest for r in records] == [self.digests[s] for s in steps]
            and records[1].result_digest == hashlib.sha256(result).hexdigest()
        )
        if not ok:
            raise ProtocolError(f"node {node!r}: receipt does not match its answer")
        return NodeReceipt(node=node, checkpoint=receipt.checkpoint, records=tuple(records))

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
    fed: Federation,
    ids: IdsColumn | tuple[str, str, str] | str,
    values: ValuesColumns | tuple[str, str, str, str] | str,
    *,
    purpose: str,
    legal_basis: str = "",
    job_id: str,
    timeout_s: float | None = None,
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

    Returns
    -------
    IntersectionSumResult
        The intersection size, the sum and both ledger heads.
    """
    if not purpose:
        raise QueryError("a purpose is required")
    i_col, v_col = _columns(ids, values)
    nodes = {n.name: n for n in fed.config.nodes}
    for name in (i_col.node, v_col.node):
        if name not in nodes:
            raise QueryError(f"node {name!r} is not in the federation file")
    keys = await _keypair(fed)
    try:
        job = PsiJob(job_id, i_col, v_col, keys[0].n, fed.config.fixed_point_bits)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    timeout = timeout_s or max(fed.config.timeout_s, MIN_STEP_TIMEOUT_S)
    relay = _Relay(fed, job, purpose, legal_basis)
    creds = channel_credentials(fed._tls)
    eps: dict[str, NodeEndpoint] = {"ids": nodes[i_col.node], "values": nodes[v_col.node]}
    chans = {k: _channel(e.address, creds, e.name) for k, e in eps.items()}
    stubs = {k: psi_pb2_grpc.PsiServiceStub(c) for k, c in chans.items()}

    def guard(side: str, aw: Awaitable[Any]) -> Awaitable[Any]:
        return fed._guarded(eps[side], aw)

    try:
        b_st, points, _ = await guard("ids", relay.blind(stubs["ids"], timeout))
        e_st, sealed, e_reply = await guard(
            "values", relay.exchange(stubs["values"], timeout, b_st, points)
        )
        i_reply = await guard("ids", relay.intersect(stubs["ids"], timeout, e_st, sealed))
    finally:
        await asyncio.gather(*(c.close() for c in chans.values()))
    receipts = (
        relay.receipt(i_reply, b_st, ("blind", "intersect"), bytes(i_reply.encrypted_sum)),
        relay.receipt(e_reply, e_st, ("exchange", "exchange"), sealed),
    )
    epsilon, noise = _dp_terms(relay.bodies["exchange"], receipts)
    total = _open_sum(keys, i_reply, noise)
    bits = job.fixed_point_bits
    sd_sum, sd_size = noise.stddevs(bits) if noise is not None else (0.0, 0.0)
    return IntersectionSumResult(
        intersection_size=i_reply.intersection_size,
        sum=total / (1 << bits),
        sum_fixed=total,
        fixed_point_bits=bits,
        job_id=job.job_id,
        ledgers=(
            psi_serde.ledger_from_proto(i_col.node, i_reply.ledger),
            psi_serde.ledger_from_proto(v_col.node, e_reply.ledger),
        ),
        receipts=receipts,
        epsilon=epsilon,
        noise_stddev=sd_sum,
        size_noise_stddev=sd_size,
    )


def _dp_terms(
    values: StatementBody, receipts: tuple[NodeReceipt, ...]
) -> tuple[dict[str, float], DpNoise | None]:
    """Epsilon per node from the verified ``released`` entries, and the noise they imply.

    The ids node calibrates the noise to the smallest epsilon of the DP nodes and to the
    bound the values node stated (see :mod:`datafed.psi._dp`).
    """
    epsilon = {r.node: r.epsilon for x in receipts for r in x.records if r.decision == "released"}
    epsilon = {k: v for k, v in epsilon.items() if v > 0}
    if not epsilon:
        if values.dp_sensitivity:
            raise ProtocolError("the nodes recorded no epsilon for a noisy release")
        return {}, None
    if not values.dp_sensitivity:
        raise ProtocolError(f"node {values.node!r} stated no bound for a noisy release")
    smallest = min(Fraction(repr(e)) for e in epsilon.values())
    return epsilon, DpNoise(str(smallest), values.dp_sensitivity)
