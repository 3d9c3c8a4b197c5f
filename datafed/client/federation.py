"""The analyst's entry point: fan a protected query out to every node and combine the answers.

One query (``docs/architecture.md``): parse the SQL; ask every node for its info once;
build the protection parameters; sign one job statement; collect the sign-offs the
policies require; send every node the statement in its own signed request; check every
receipt; run a stepped mode's protocol (cancelled at the nodes on Ctrl-C); combine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client._ask import ask_node
from datafed.client._assemble import GroupKey, assemble, group_threshold, reported_groups
from datafed.client._connection import Connection, run_sync
from datafed.client._query import QueryJob, collect_signoffs
from datafed.client._receipts import answer_digest, node_receipt
from datafed.client._session import ProtocolSession, cancel_on_interrupt
from datafed.client._transport import Transport
from datafed.client.config import FederationConfig, load_federation
from datafed.client.nodeinfo import NodeInfo, NodeStatus
from datafed.client.progress import (
    CURRENT,
    Progress,
    ReportingSession,
    ignore,
    reported,
    reporting,
)
from datafed.client.psi import run_intersection_sum
from datafed.errors import ProtocolError, QueryError
from datafed.modes import (
    Combined,
    ModeContext,
    NodeAnswer,
    ProtectionMode,
    SteppedMode,
    mode_class,
)
from datafed.proto.v1 import query_pb2
from datafed.psi import IntersectionSumResult
from datafed.query.components import Component, components
from datafed.query.post import PostProcess
from datafed.query.result import NodeReceipt, QueryResult
from datafed.query.spec import QuerySpec
from datafed.query.sql import parse_query
from datafed.wire.serde import literal_to_proto, spec_to_proto
from datafed.wire.signing import MAX_LIFETIME_MS
from datafed.wire.statement import new_job_id, sign_job_statement

__all__ = ["Federation", "NodeInfo", "NodeStatus", "new_job_id", "run_sync"]


class Federation(Connection):
    """A set of agency nodes the analyst can query.

    Parameters
    ----------
    config
        The federation file's contents (see :mod:`datafed.client.config`).

    Examples
    --------
    >>> fed = Federation.from_file("fed.toml")  # doctest: +SKIP
    >>> fed.query("SELECT SUM(bursts) FROM pipe_incidents", purpose="planning")  # doctest: +SKIP
    """

    def __init__(self, config: FederationConfig) -> None:
        super().__init__(config)
        self._modes: dict[str, ProtectionMode] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Federation:
        """Load a federation file and connect lazily."""
        return cls(load_federation(Path(path)))

    # ----------------------------------------------------------------- queries
    def query(
        self,
        sql: str | QuerySpec,
        *,
        purpose: str,
        protection: str = "paillier",
        legal_basis: str = "",
        job_id: str | None = None,
        progress: Progress | None = None,
    ) -> QueryResult:
        """Run a protected query on every node and return the combined result.

        Works in plain scripts and inside a running event loop (a Jupyter cell): see
        :func:`run_sync`; in async code ``await`` :meth:`aquery` instead.

        Parameters
        ----------
        sql
            A query in the supported SQL subset (``docs/analyst.md``), or a ready
            :class:`QuerySpec`.  Aliases, HAVING, ORDER BY and LIMIT are applied here, to
            the released result.
        purpose
            The declared purpose; every node's policy must allow it.
        protection
            A protection mode (:func:`datafed.modes.describe_modes`); ``paillier`` by default.
        legal_basis
            Recorded in every node's ledger.
        job_id
            A job id (default: a fresh random one); nodes refuse one they have seen.
        progress
            Called with each :class:`~datafed.client.progress.Step` as the job advances.
        """
        return run_sync(
            self.aquery(
                sql,
                purpose=purpose,
                protection=protection,
                legal_basis=legal_basis,
                job_id=job_id,
                progress=progress,
            )
        )

    async def aquery(
        self,
        sql: str | QuerySpec,
        *,
        purpose: str,
        protection: str = "paillier",
        legal_basis: str = "",
        job_id: str | None = None,
        progress: Progress | None = None,
    ) -> QueryResult:
        """Async form of :meth:`query`: ``result = await fed.aquery(sql, purpose=...)``."""
        if isinstance(sql, str):
            parsed = parse_query(sql)
            spec, post = parsed.spec, parsed.post
        else:
            spec, post = sql, None
        if not purpose:
            raise QueryError("a purpose is required")
        report = progress or ignore
        token = CURRENT.set(report)  # the per-node steps report through it (tasks copy it)
        try:
            return await self._aquery(spec, post, purpose, protection, legal_basis, job_id)
        finally:
            CURRENT.reset(token)

    async def _aquery(
        self,
        spec: QuerySpec,
        post: PostProcess | None,
        purpose: str,
        protection: str,
        legal_basis: str,
        job_id: str | None,
    ) -> QueryResult:
        report = CURRENT.get()
        mode = self._mode(protection)
        comps = components(spec)
        if mode.additive_only and not all(c.additive for c in comps):
            raise QueryError(f"MIN and MAX are not available with protection {protection!r}")
        async with self.transport() as transport:
            infos = await self._infos(transport)
            if post is not None:  # HAVING's literals take the columns' types (query.post)
                ds = {i.node: i.described.get(spec.dataset) for i in infos}
                post = post.bind({n: d.columns for n, d in ds.items() if d is not None})
            keys = self._log_keys(infos)
            domain = reported_groups(spec, mode, infos)
            job, spec_msg = await self._open_job(
                spec, mode, infos, domain, job_id or new_job_id(), purpose, legal_basis
            )
            signoffs = await self._signoffs(transport, job, infos)
            async with cancel_on_interrupt(transport, job):
                answers, receipts = await self._ask(transport, job, spec_msg, signoffs, keys)
                combined, steps = await self._run_protocol(
                    transport, mode, job, keys, answers, comps, domain
                )
        with reporting(report, "", "combine"):
            result = assemble(
                spec,
                comps,
                mode,
                self.config.fixed_point_bits,
                job.job_id,
                domain,
                answers,
                combined,
                k=group_threshold(spec.dataset, infos),
            )
            if post is not None:
                result = result.postprocess(post)
        return dataclasses.replace(
            result, receipts=receipts, step_receipts=steps, statement=job.statement.digest
        )

    async def _open_job(
        self,
        spec: QuerySpec,
        mode: ProtectionMode,
        infos: Sequence[NodeInfo],
        domain: list[GroupKey] | None,
        job_id: str,
        purpose: str,
        legal_basis: str,
    ) -> tuple[QueryJob, query_pb2.QuerySpec]:
        """The job's protection parameters and its signed statement (spec, roster, mode)."""
        roster = tuple(n.name for n in self.config.nodes)
        ctx = ModeContext(
            job_id=job_id,
            nodes=roster,
            certificates={i.node: i.certificate_pem for i in infos},
        )
        with reporting(CURRENT.get(), "", f"{mode.name} parameters"):
            pmsg = query_pb2.Protection(
                mode=mode.name,
                fixed_point_bits=self.config.fixed_point_bits,
                params=await mode.params(ctx),
            )
        for key in domain or ():
            pmsg.domain.add().values.extend(literal_to_proto(v) for v in key)
        spec_msg = spec_to_proto(spec)
        statement = sign_job_statement(
            self._signing_key,
            job_id=job_id,
            requester=self.config.analyst,
            purpose=purpose,
            operation="query",
            dataset=spec.dataset,
            spec=spec_msg,
            protection=mode.name,
            protection_msg=pmsg,
            roster=roster,
            lifetime_ms=MAX_LIFETIME_MS,
            legal_basis=legal_basis,
        )
        return QueryJob(spec, statement, pmsg, purpose, legal_basis), spec_msg

    async def _run_protocol(
        self,
        transport: Transport,
        mode: ProtectionMode,
        job: QueryJob,
        keys: Mapping[str, ed25519.Ed25519PublicKey],
        answers: Sequence[query_pb2.QueryResponse],
        comps: Sequence[Component],
        domain: list[GroupKey] | None,
    ) -> tuple[Combined | None, tuple[NodeReceipt, ...]]:
        """A stepped mode's protocol among the nodes, started by their answers."""
        if not isinstance(mode, SteppedMode):
            return None, ()
        session = ProtocolSession(
            transport,
            job_id=job.job_id,
            mode=mode.name,
            purpose=job.purpose,
            binding=job.statement.digest,
            keys=keys,
            legal_basis=job.legal_basis,
        )
        combined = await mode.finish(
            ReportingSession(session, mode.steps, CURRENT.get()),
            [NodeAnswer(a.node, bytes(a.payload)) for a in answers],
            comps,
            len(domain or ()),
            self.config.fixed_point_bits,
        )
        return combined, tuple(session.receipts)

    async def _signoffs(
        self, transport: Transport, job: QueryJob, infos: Sequence[NodeInfo]
    ) -> dict[str, list[query_pb2.SignOff]]:
        """The sign-offs the nodes' policies require, bound to the job (target -> grants)."""
        return await collect_signoffs(transport, job, infos)

    async def _ask(
        self,
        transport: Transport,
        job: QueryJob,
        spec_msg: query_pb2.QuerySpec,
        signoffs: Mapping[str, Sequence[query_pb2.SignOff]],
        keys: Mapping[str, ed25519.Ed25519PublicKey],
    ) -> tuple[list[query_pb2.QueryResponse], tuple[NodeReceipt, ...]]:
        """Send every node of the roster its signed request; check every receipt."""
        timeout, mode = self.config.timeout_s, self._mode(job.protection.mode)
        digests: dict[str, str] = {}

        @reported(CURRENT.get(), "query")
        async def one(node: str, ch: grpc.aio.Channel) -> query_pb2.QueryResponse:
            def body(attached: bytes) -> query_pb2.QueryRequestBody:
                return query_pb2.QueryRequestBody(
                    header=transport.header(node, job.job_id, job.purpose, job.legal_basis),
                    spec=spec_msg,
                    protection=job.protection,
                    sign_offs=signoffs.get(node, []),
                    statement=job.statement.to_proto(),
                    public_context=attached,
                )

            reply, digests[node] = await ask_node(transport, node, ch, mode, body, timeout)
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

    def _mode(self, name: str) -> ProtectionMode:
        if name not in self._modes:
            try:
                cls = mode_class(name)
            except ValueError as exc:
                raise QueryError(str(exc)) from exc
            self._modes[name] = cls.from_options(self.config.modes.get(name))
        return self._modes[name]

    # ------------------------------------------------------- intersection-sum
    def intersection_sum(
        self,
        ids: tuple[str, str, str] | str,
        values: tuple[str, str, str, str] | str,
        *,
        purpose: str,
        legal_basis: str = "",
        job_id: str | None = None,
        timeout_s: float | None = None,
        progress: Progress | None = None,
    ) -> IntersectionSumResult:
        """Sum one node's values over the identifiers it shares with another node.

        Parameters
        ----------
        ids
            ``(node, dataset, id_column)`` of the identifier side.
        values
            ``(node, dataset, id_column, value_column)`` of the value side.
        purpose, legal_basis
            Declared to, and recorded by, both nodes; both policies must allow them.
        job_id
            Reuse a job id (default: a fresh random one).
        timeout_s
            Deadline of each step (default: the federation's, at least 600 s).
        progress
            Called with each :class:`~datafed.client.progress.Step` as the job advances.

        Returns
        -------
        IntersectionSumResult
            The intersection size and the sum (nothing else; see :mod:`datafed.psi`).
        """
        return run_sync(
            self.aintersection_sum(
                ids,
                values,
                purpose=purpose,
                legal_basis=legal_basis,
                job_id=job_id,
                timeout_s=timeout_s,
                progress=progress,
            )
        )

    async def aintersection_sum(
        self,
        ids: tuple[str, str, str] | str,
        values: tuple[str, str, str, str] | str,
        *,
        purpose: str,
        legal_basis: str = "",
        job_id: str | None = None,
        timeout_s: float | None = None,
        progress: Progress | None = None,
    ) -> IntersectionSumResult:
        """Async form of :meth:`intersection_sum`."""
        return await run_intersection_sum(
            self,
            ids,
            values,
            purpose=purpose,
            legal_basis=legal_basis,
            job_id=job_id or new_job_id(),
            timeout_s=timeout_s,
            progress=progress or ignore,
        )
