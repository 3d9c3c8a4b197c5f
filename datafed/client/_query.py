"""One query's requests to the nodes: its job, the sign-offs it needs, its fan-out.

:class:`QueryJob` is what every request of a query carries (the signed job statement,
the protection, the purpose and legal basis). :func:`collect_signoffs` asks the approvers
the nodes' policies name, each sign-off bound to the statement; :func:`ask_nodes` sends
every node of the roster its own signed request and checks each receipt.
:class:`~datafed.client.federation.Federation` runs them in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client._receipts import answer_digest, node_receipt
from datafed.client._transport import Transport
from datafed.client.nodeinfo import NodeInfo
from datafed.client.progress import CURRENT, reported
from datafed.errors import ProtocolError, QueryError
from datafed.proto.v1 import query_pb2, query_pb2_grpc
from datafed.query.result import NodeReceipt
from datafed.query.spec import QuerySpec
from datafed.wire.statement import SignedJobStatement

__all__ = ["QueryJob", "ask_nodes", "collect_signoffs"]


@dataclass(frozen=True)
class QueryJob:
    """What one query sends: its statement, protection and the requests' common parts."""

    spec: QuerySpec
    statement: SignedJobStatement
    protection: query_pb2.Protection
    purpose: str
    legal_basis: str

    @property
    def job_id(self) -> str:
        return self.statement.statement.job_id


async def collect_signoffs(
    transport: Transport, job: QueryJob, infos: Sequence[NodeInfo]
) -> dict[str, list[query_pb2.SignOff]]:
    """Ask every approver a node requires for the job's dataset; target -> sign-offs.

    Each sign-off binds the job statement's digest: it approves this one query.
    """
    dataset = job.spec.dataset
    wanted: dict[str, list[str]] = {}  # approver -> target nodes
    for info in infos:
        for approver in info.required_signoff.get(dataset, ()):
            wanted.setdefault(approver, []).append(info.node)
    if not wanted:
        return {}
    known = {e.name for e in (*transport.config.approvers, *transport.config.nodes)}
    missing = sorted(set(wanted) - known)
    if missing:
        raise QueryError(
            f"{dataset!r} needs sign-off by {', '.join(missing)}: add them to "
            "[[approvers]] in the federation file"
        )
    timeout = transport.config.timeout_s

    async def ask(approver: str, ch: grpc.aio.Channel) -> list[tuple[str, query_pb2.SignOff]]:
        out = []
        stub = query_pb2_grpc.QueryServiceStub(ch)
        for target in wanted[approver]:
            signed = transport.sign(
                query_pb2.SignOffRequestBody(
                    header=transport.header(approver, job.job_id, job.purpose, job.legal_basis),
                    target_node=target,
                    dataset=dataset,
                    statement=job.statement.to_proto(),
                )
            )
            grant: query_pb2.SignOff = await stub.GrantSignOff(signed.request, timeout=timeout)
            out.append((target, grant))
        return out

    result: dict[str, list[query_pb2.SignOff]] = {}
    for pairs in await transport.fan_out(sorted(wanted), ask):
        for target, grant in pairs:
            result.setdefault(target, []).append(grant)
    return result


async def ask_nodes(
    transport: Transport,
    job: QueryJob,
    spec_msg: query_pb2.QuerySpec,
    signoffs: Mapping[str, Sequence[query_pb2.SignOff]],
    keys: Mapping[str, ed25519.Ed25519PublicKey],
) -> tuple[list[query_pb2.QueryResponse], tuple[NodeReceipt, ...]]:
    """Send every node of the roster its signed request; check every receipt."""
    timeout = transport.config.timeout_s
    digests: dict[str, str] = {}

    @reported(CURRENT.get(), "query")
    async def one(node: str, ch: grpc.aio.Channel) -> query_pb2.QueryResponse:
        signed = transport.sign(
            query_pb2.QueryRequestBody(
                header=transport.header(node, job.job_id, job.purpose, job.legal_basis),
                spec=spec_msg,
                protection=job.protection,
                sign_offs=signoffs.get(node, []),
                statement=job.statement.to_proto(),
            )
        )
        digests[node] = signed.digest
        reply: query_pb2.QueryResponse = await query_pb2_grpc.QueryServiceStub(ch).Query(
            signed.request, timeout=timeout
        )
        if reply.node != node:
            raise ProtocolError(f"node {node!r} answered as {reply.node!r}")
        return reply

    answers = await transport.fan_out(job.statement.statement.roster, one)
    receipts = tuple(
        node_receipt(
            a.node,
            keys[a.node],
            a.receipt if a.HasField("receipt") else None,
            job_id=job.job_id,
            request_digests=[digests[a.node]] * 2,
            decisions=["approved", "released"],
            result_digest=answer_digest(a),
        )
        for a in answers
    )
    return answers, receipts
