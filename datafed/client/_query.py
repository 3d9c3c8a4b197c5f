"""One query's job and the sign-offs it needs before it fans out.

:class:`QueryJob` is what every request of a query carries (the signed job statement,
the protection, the purpose and legal basis). :func:`collect_signoffs` asks the approvers
the nodes' policies name, each sign-off bound to the statement;
:class:`~datafed.client.federation.Federation` then sends every node its request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from datafed.client._transport import Transport
from datafed.client.nodeinfo import NodeInfo
from datafed.errors import QueryError
from datafed.proto.v1 import query_pb2, query_pb2_grpc
from datafed.query.spec import QuerySpec
from datafed.wire.statement import SignedJobStatement

__all__ = ["QueryJob", "collect_signoffs"]


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
