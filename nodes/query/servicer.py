"""The node's QueryService: protected aggregate queries, sign-offs for others, node info.

A query runs the node's one pipeline (:mod:`nodes.rpc`): the signed request is opened;
the spec, protection and job statement are decoded and checked against each other
(:mod:`nodes.query.job`); the policy engine admits the use (``approved``, epsilon
charged); the release gate (:mod:`nodes.release.query`) computes the answer under the
dataset's rule, protects it, binds it to the statement and records ``released`` with its
digest -- per-node facts go to the entry's private part, which only auditors read -- and
the answer leaves with its receipt.
"""

from __future__ import annotations

import hashlib

from datafed.pki.ca import Identity
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.wire.serde import literal_to_proto
from nodes.config import DatasetPolicy
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, status_of
from nodes.gate import peer_identity
from nodes.policy.signoff import Signer, grant_signoff, parse_signoff_request
from nodes.query.job import open_query_async
from nodes.release.query import release_query
from nodes.rpc import Context, signed_call

__all__ = ["QueryServicer"]


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """gRPC QueryService of one agency node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    async def Query(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> query_pb2.QueryResponse:
        """Answer one signed, protected aggregate query."""
        async with signed_call(self.ctx, context, request, "query") as call:
            # Opened, bounded, decoded, typed and costed off the event loop (nodes.limits).
            job = await open_query_async(self.ctx, call, peer_identity(context))
            grant = await call.admit(job.use)
            response = await release_query(self.ctx, call, grant, job)  # the release gate
            response.receipt.CopyFrom(await call.receipt())
            response.ledger.CopyFrom(call.head())
            return response

    async def GrantSignOff(  # noqa: N802 - gRPC method name
        self, request: common_pb2.SignedRequest, context: Context
    ) -> query_pb2.SignOff:
        """Approve one job on another node's dataset if this node's grants allow it."""
        ctx = self.ctx
        async with signed_call(ctx, context, request, "sign_off") as call:
            body = call.open(parse_signoff_request)
            assert call.identity is not None and call.header is not None
            call.dataset = f"{body.target_node[:64]}/{body.dataset[:64]}"
            limit = ctx.config.limits.max_statement_bytes
            if body.statement.ByteSize() > limit:
                raise InvalidRequest(
                    f"the job statement is larger than {limit:,} bytes (limits.max_statement_bytes)"
                )
            statement = call.open_statement(body.statement)
            signer = Signer(ctx.name, ctx.signing_key, ctx.tls.cert)
            signed = grant_signoff(ctx.config, signer, call.identity, call.header, body, statement)
            await call.record(
                decision="approved",
                reason="sign-off granted",
                result_digest=hashlib.sha256(signed.statement).hexdigest(),
            )
            return signed

    def _dataset_info(self, name: str, caller: Identity) -> query_pb2.DatasetInfo:
        store = self.ctx.store
        info = query_pb2.DatasetInfo(name=name, columns=list(store.columns(name)))
        cfg = self.ctx.config.dataset(name)
        types = store.column_types(name)
        notes = cfg.column_descriptions if cfg is not None else {}
        for col in info.columns:
            info.column_info.add(name=col, type=types[col], description=notes.get(col, ""))
        if cfg is None:
            return info
        info.description = cfg.description
        info.required_signoff.extend(cfg.policy.required_signoff)
        for col, values in cfg.policy.group_domains.items():
            info.group_domains.add(column=col, values=[literal_to_proto(v) for v in values])
        info.access.CopyFrom(self._access(name, cfg.policy, caller))
        return info

    def _access(
        self, name: str, policy: DatasetPolicy, caller: Identity
    ) -> query_pb2.DatasetAccess:
        """What ``caller`` may do with dataset ``name`` (policy only, never data)."""
        if caller.role != "analyst" or caller.name not in policy.allowed_requesters:
            return query_pb2.DatasetAccess(allowed=False)
        access = query_pb2.DatasetAccess(
            allowed=True,
            purposes=policy.allowed_purposes,
            aggregates=policy.allowed_aggregates,
            protections=policy.allowed_protections,
            operations=policy.allowed_operations,
            columns=policy.allowed_columns or [],
            min_group_size=policy.min_group_size,
            consortium=policy.consortium,
            min_participants=policy.min_participants,
            required_participants=policy.required_participants,
        )
        dp = policy.dp
        if dp is not None:
            # The epsilon left in the budget the caller draws on (its own or the dataset's
            # shared one): what a refusal for an exhausted budget would tell it anyway.
            spent = self.ctx.policy.budget.spent(caller.name, name)
            access.dp = True
            access.epsilon_per_query = dp.epsilon_per_query
            access.budget_epsilon = dp.budget_epsilon
            access.budget_left = max(0.0, dp.budget_epsilon - spent)
            access.budget_scope = dp.budget_scope
        return access

    async def NodeInfo(  # noqa: N802 - gRPC method name
        self, request: query_pb2.NodeInfoRequest, context: Context
    ) -> query_pb2.NodeInfoResponse:
        """Describe the datasets, what the caller may do, and the ledger head (reads no data).

        The caller is known from its certificate; what it may do comes from the policy
        (and, under DP, the epsilon left in its budget).  Row counts are never given.
        """
        try:
            caller = peer_identity(context)
        except NodeError as exc:
            code, message = status_of(exc)
            await context.abort(code, message)
        return query_pb2.NodeInfoResponse(
            node=self.ctx.name,
            agency=self.ctx.config.node.agency,
            datasets=[self._dataset_info(n, caller) for n in self.ctx.store.names()],
            caller=str(caller),
            ledger=self.ctx.head_proto(),
            certificate_pem=self.ctx.tls.cert,
        )
