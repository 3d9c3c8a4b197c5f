"""The analyst's entry point: fan a protected query out to every node and combine the answers.

One query, step by step (``docs/architecture.md``): parse the SQL into a spec; ask every
node for its info once (certificates, declared group values, required sign-offs); build
the protection parameters; sign one job statement naming the spec, the protection and
the roster; collect the sign-offs the nodes' policies require (bound to that statement);
send every node the same statement in its own signed request; check every receipt; run a
stepped mode's protocol; combine and finish the aggregates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client import _assemble
from datafed.client._receipts import answer_digest, node_receipt
from datafed.client._session import ProtocolSession
from datafed.client._transport import Transport
from datafed.client.config import FederationConfig, load_federation
from datafed.client.nodeinfo import NodeInfo, NodeStatus, node_info_from_proto
from datafed.client.progress import (
    CURRENT,
    Progress,
    ReportingSession,
    ignore,
    reported,
    reporting,
)
from datafed.errors import DatafedError, PkiError, ProtocolError, QueryError
from datafed.modes import ModeContext, NodeAnswer, ProtectionMode, SteppedMode, mode_class
from datafed.pki.ca import load_signing_key
from datafed.pki.peers import verify_peer
from datafed.pki.tls import TlsMaterial
from datafed.proto.v1 import query_pb2, query_pb2_grpc
from datafed.psi import IntersectionSumResult
from datafed.query.components import reported_components
from datafed.query.post import PostProcess
from datafed.query.result import NodeReceipt, QueryResult
from datafed.query.spec import QuerySpec, Scalar
from datafed.query.sql import parse_query
from datafed.wire.serde import literal_to_proto, spec_to_proto
from datafed.wire.signing import MAX_LIFETIME_MS
from datafed.wire.statement import SignedJobStatement, new_job_id, sign_job_statement

__all__ = ["Federation", "NodeInfo", "NodeStatus", "new_job_id", "run_sync"]

#: Most groups a protected GROUP BY may span (the cartesian product of declared values).
MAX_GROUPS = 10_000
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop.

    Outside an event loop this is :func:`asyncio.run`.  Inside one (a Jupyter cell runs
    in the kernel's loop) a second ``asyncio.run`` would fail and nesting loops is
    unsafe, so the coroutine runs on a private loop in a worker thread while the caller
    waits; ``await fed.aquery(...)`` is the form that keeps the caller's loop free.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="datafed") as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass(frozen=True)
class _Job:
    """What one query sends: its statement, protection and the requests' common parts."""

    spec: QuerySpec
    statement: SignedJobStatement
    protection: query_pb2.Protection
    purpose: str
    legal_basis: str

    @property
    def job_id(self) -> str:
        return self.statement.statement.job_id


class Federation:
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
        self.config = config
        self._tls = TlsMaterial.load(config.tls)
        self._signing_key = load_signing_key(config.tls.signing_key)
        self._modes: dict[str, ProtectionMode] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Federation:
        """Load a federation file and connect lazily."""
        return cls(load_federation(Path(path)))

    def transport(self) -> Transport:
        """A transport (pooled channels, signer, error map) for one job; close it after."""
        return Transport(self.config, self._tls, self._signing_key)

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
        comps = reported_components(spec)
        if mode.additive_only and not all(c.additive for c in comps):
            raise QueryError(f"MIN and MAX are not available with protection {protection!r}")
        async with self.transport() as transport:
            infos = await self._infos(transport)
            keys = self._log_keys(infos)
            roster = tuple(n.name for n in self.config.nodes)
            domain = self._domain(spec, infos) if spec.group_by and mode.hides_groups else None
            if domain is None and mode.hides_groups:
                domain = [()]  # one group; every node reports it, so the payloads combine
            job_id = job_id or new_job_id()
            ctx = ModeContext(
                job_id=job_id,
                nodes=roster,
                certificates={i.node: i.certificate_pem for i in infos},
            )
            with reporting(report, "", f"{mode.name} parameters"):
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
            job = _Job(spec, statement, pmsg, purpose, legal_basis)
            signoffs = await self._signoffs(transport, job, infos)
            answers, receipts = await self._ask(transport, job, spec_msg, signoffs, keys)
            combined = None
            steps: tuple[NodeReceipt, ...] = ()
            if isinstance(mode, SteppedMode):  # the answers start a protocol among the nodes
                session = ProtocolSession(
                    transport,
                    job_id=job_id,
                    mode=mode.name,
                    purpose=purpose,
                    binding=statement.digest,
                    keys=keys,
                    legal_basis=legal_basis,
                )
                combined = await mode.finish(
                    ReportingSession(session, mode.steps, report),
                    [NodeAnswer(a.node, bytes(a.payload)) for a in answers],
                    comps,
                    len(domain or ()),
                    self.config.fixed_point_bits,
                )
                steps = tuple(session.receipts)
        with reporting(report, "", "combine"):
            result = _assemble.assemble(
                spec,
                comps,
                mode,
                self.config.fixed_point_bits,
                job_id,
                domain,
                answers,
                combined,
                dp_k=_dp_threshold(spec.dataset, infos),
            )
            if post is not None:
                result = result.postprocess(post)
        return dataclasses.replace(
            result, receipts=receipts, step_receipts=steps, statement=statement.digest
        )

    async def _ask(
        self,
        transport: Transport,
        job: _Job,
        spec_msg: query_pb2.QuerySpec,
        signoffs: Mapping[str, Sequence[query_pb2.SignOff]],
        keys: Mapping[str, ed25519.Ed25519PublicKey],
    ) -> tuple[list[query_pb2.QueryResponse], tuple[NodeReceipt, ...]]:
        """Send every node of the roster its signed request; check every receipt."""
        timeout = self.config.timeout_s
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

    def _log_keys(self, infos: Sequence[NodeInfo]) -> dict[str, ed25519.Ed25519PublicKey]:
        """Each node's log key, from the certificate it presented, verified against our CA."""
        keys = {}
        for info in infos:
            try:
                identity = verify_peer(info.certificate_pem, self._tls.ca)
            except PkiError as exc:
                raise ProtocolError(f"node {info.node!r}: {exc}") from exc
            if identity.name != info.node:
                raise ProtocolError(f"node {info.node!r} presents {identity}'s certificate")
            keys[info.node] = identity.signing_key
        return keys

    def _mode(self, name: str) -> ProtectionMode:
        if name not in self._modes:
            try:
                cls = mode_class(name)
            except ValueError as exc:
                raise QueryError(str(exc)) from exc
            self._modes[name] = cls.from_options(self.config.modes.get(name))
        return self._modes[name]

    def _domain(self, spec: QuerySpec, infos: Sequence[NodeInfo]) -> list[_assemble.GroupKey]:
        """The union of every node's declared values for the GROUP BY columns."""
        per_column: list[list[Scalar]] = []
        for col in spec.group_by:
            values: dict[Scalar, None] = {}
            for info in infos:
                declared = info.group_domains.get(spec.dataset, {}).get(col)
                if declared is None:
                    raise QueryError(
                        f"GROUP BY {col} under a protected mode needs every node to declare "
                        f"the values of {col!r} (policy group_domains); {info.node!r} does not"
                    )
                values.update(dict.fromkeys(declared))
            per_column.append(list(values))
        domain: list[_assemble.GroupKey] = [tuple(k) for k in itertools.product(*per_column)]
        if len(domain) > MAX_GROUPS:
            raise QueryError(f"GROUP BY spans {len(domain)} groups; at most {MAX_GROUPS}")
        return domain

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
        from datafed.client.psi import run_intersection_sum

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

    # -------------------------------------------------------------- node info
    def node_info(self) -> list[NodeInfo]:
        """Ask every node for its datasets, declared group values and ledger head."""
        return run_sync(self.anode_info())

    async def anode_info(self) -> list[NodeInfo]:
        """Async form of :meth:`node_info` (fails if a node does not answer)."""
        async with self.transport() as transport:
            return await self._infos(transport)

    def discover(self) -> list[NodeStatus]:
        """Every node's datasets, typed columns and what this analyst may do there.

        A node that does not answer is listed with the reason instead of failing the
        call (``datafed nodes``).
        """
        return run_sync(self.adiscover())

    async def adiscover(self) -> list[NodeStatus]:
        """Async form of :meth:`discover`."""
        timeout = self.config.timeout_s

        async def one(transport: Transport, node: str, address: str) -> NodeStatus:
            async def rpc(ch: grpc.aio.Channel) -> query_pb2.NodeInfoResponse:
                return await query_pb2_grpc.QueryServiceStub(ch).NodeInfo(  # type: ignore[no-any-return]
                    query_pb2.NodeInfoRequest(), timeout=timeout
                )

            try:
                reply = await transport.call(node, rpc)
            except DatafedError as exc:
                return NodeStatus(node, address, None, str(exc))
            if reply.node != node:
                return NodeStatus(node, address, None, f"answers as {reply.node!r}")
            return NodeStatus(node, address, node_info_from_proto(reply))

        async with self.transport() as transport:
            return list(
                await asyncio.gather(
                    *(one(transport, n.name, n.address) for n in self.config.nodes)
                )
            )

    async def _infos(self, transport: Transport) -> list[NodeInfo]:
        timeout = self.config.timeout_s

        @reported(CURRENT.get(), "node info")
        async def one(node: str, ch: grpc.aio.Channel) -> query_pb2.NodeInfoResponse:
            reply: query_pb2.NodeInfoResponse = await query_pb2_grpc.QueryServiceStub(ch).NodeInfo(
                query_pb2.NodeInfoRequest(), timeout=timeout
            )
            if reply.node != node:
                address = transport.endpoint(node).address
                raise ProtocolError(f"node at {address} calls itself {reply.node!r}, not {node!r}")
            return reply

        answers = await transport.fan_out([n.name for n in self.config.nodes], one)
        return [node_info_from_proto(a) for a in answers]

    # ---------------------------------------------------------------- sign-off
    async def _signoffs(
        self, transport: Transport, job: _Job, infos: Sequence[NodeInfo]
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
        known = {e.name for e in (*self.config.approvers, *self.config.nodes)}
        missing = sorted(set(wanted) - known)
        if missing:
            raise QueryError(
                f"{dataset!r} needs sign-off by {', '.join(missing)}: add them to "
                "[[approvers]] in the federation file"
            )
        timeout = self.config.timeout_s

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


def _dp_threshold(dataset: str, infos: Sequence[NodeInfo]) -> int | None:
    """The largest *k* among the nodes whose ``dataset`` is under DP (``None``: no DP)."""
    ks = [
        d.access.min_group_size
        for i in infos
        if (d := i.described.get(dataset)) is not None and d.access.dp
    ]
    return max(ks) if ks else None
