"""The analyst's entry point: fan a protected query out to every node and combine the answers."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519

from datafed.client import _assemble
from datafed.client._receipts import check_receipt
from datafed.client._session import ProtocolSession, finish_steps
from datafed.client.config import FederationConfig, NodeEndpoint, load_federation
from datafed.errors import NodeUnavailable, PkiError, ProtocolError, QueryError, RemoteError
from datafed.peers import verify_peer
from datafed.pki import load_signing_key
from datafed.proto.v1 import common_pb2, query_pb2, query_pb2_grpc
from datafed.psi import IntersectionSumResult
from datafed.query.components import components
from datafed.query.modes import ModeContext, PaillierMode, ProtectionMode, mode_class
from datafed.query.result import LedgerHeadInfo, NodeReceipt, QueryResult
from datafed.query.spec import QuerySpec, Scalar
from datafed.query.sql import parse_sql
from datafed.serde import header_to_proto, literal_from_proto, literal_to_proto, spec_to_proto
from datafed.signing import new_header, sign_body
from datafed.tls import TlsMaterial, channel_credentials

__all__ = ["Federation", "NodeInfo"]

T = TypeVar("T")
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Most groups a protected GROUP BY may span (the cartesian product of declared values).
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself: its datasets and its ledger head."""

    node: str
    agency: str
    datasets: dict[str, tuple[str, ...]]
    ledger: LedgerHeadInfo
    group_domains: dict[str, dict[str, tuple[Scalar, ...]]]
    certificate_pem: bytes
    required_signoff: dict[str, tuple[str, ...]]


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
        self._keys: dict[str, ed25519.Ed25519PublicKey] | None = None

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
    ) -> QueryResult:
        """Run a protected query on every node and return the combined result.

        Parameters
        ----------
        sql
            A query in the supported SQL subset, or a ready :class:`QuerySpec`.
        purpose
            The declared purpose; every node's policy must allow it.
        protection
            ``paillier`` (default) or ``plain``.
        legal_basis
            Recorded in every node's ledger.
        job_id
            Reuse a job id (default: a fresh random one).
        """
        return asyncio.run(
            self.aquery(
                sql, purpose=purpose, protection=protection, legal_basis=legal_basis, job_id=job_id
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
    ) -> QueryResult:
        """Async form of :meth:`query`."""
        spec = parse_sql(sql) if isinstance(sql, str) else sql
        if not purpose:
            raise QueryError("a purpose is required")
        mode = self._mode(protection)
        comps = components(spec)
        if mode.additive_only and not all(c.additive for c in comps):
            raise QueryError(f"MIN and MAX are not available with protection {protection!r}")
        job = job_id or new_job_id()
        need_domain = bool(spec.group_by) and mode.hides_groups
        infos = await self.anode_info()
        signoffs = await self._signoffs(spec, infos, job, purpose, legal_basis)
        domain = self._domain(spec, infos) if need_domain else None
        if domain is None and mode.hides_groups:
            domain = [()]  # one group; every node reports it, so the payloads combine as one
        ctx = ModeContext(
            job_id=job,
            nodes=tuple(n.name for n in self.config.nodes),
            certificates={i.node: i.certificate_pem for i in infos},
        )
        bits = self.config.fixed_point_bits
        pmsg = query_pb2.Protection(
            mode=mode.name, fixed_point_bits=bits, params=await mode.params(ctx)
        )
        for key in domain or ():
            pmsg.domain.add().values.extend(literal_to_proto(v) for v in key)
        spec_msg = spec_to_proto(spec)

        async def one(
            stub: query_pb2_grpc.QueryServiceStub, node: NodeEndpoint
        ) -> query_pb2.QueryResponse:
            header = new_header(self.config.analyst, node.name, job, purpose, legal_basis)
            body = query_pb2.QueryRequestBody(
                header=header_to_proto(header),
                spec=spec_msg,
                protection=pmsg,
                sign_offs=signoffs.get(node.name, []),
            ).SerializeToString()
            signed = common_pb2.SignedRequest(
                body=body, signature=sign_body(body, self._signing_key)
            )
            reply: query_pb2.QueryResponse = await stub.Query(signed, timeout=self.config.timeout_s)
            digests[node.name] = hashlib.sha256(body).hexdigest()
            return reply

        digests: dict[str, str] = {}
        keys = await self._node_keys()
        answers = await self._fan_out(one)
        receipts = tuple(
            check_receipt(a.node, keys[a.node], job, digests[a.node], a) for a in answers
        )
        combined = None
        steps: tuple[NodeReceipt, ...] = ()
        if mode.steps:  # multi-step modes: the nodes' answers start a protocol
            session = ProtocolSession(
                self.config,
                self._tls,
                self._signing_key,
                job_id=job,
                mode=mode.name,
                purpose=purpose,
                legal_basis=legal_basis,
                keys=keys,
            )
            combined = await finish_steps(session, mode, answers, comps, len(domain or ()), bits)
            steps = tuple(session.receipts)
        result = _assemble.assemble(spec, comps, mode, bits, job, domain, answers, combined)
        return dataclasses.replace(result, receipts=receipts, step_receipts=steps)

    async def _node_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        """Each node's log key, from its certificate verified against our CA (cached)."""
        if self._keys is None:
            keys = {}
            for info in await self.anode_info():
                try:
                    identity = verify_peer(info.certificate_pem, self._tls.ca)
                except PkiError as exc:
                    raise ProtocolError(f"node {info.node!r}: {exc}") from exc
                if identity.name != info.node:
                    raise ProtocolError(f"node {info.node!r} presents {identity}'s certificate")
                keys[info.node] = identity.signing_key
            self._keys = keys
        return self._keys

    def _mode(self, name: str) -> ProtectionMode:
        if name not in self._modes:
            try:
                cls = mode_class(name)
            except ValueError as exc:
                raise QueryError(str(exc)) from exc
            if cls is PaillierMode:
                self._modes[name] = PaillierMode(self.config.paillier_bits)
            else:
                self._modes[name] = cls()  # type: ignore[abstract]
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

        Returns
        -------
        IntersectionSumResult
            The intersection size and the sum (nothing else; see :mod:`datafed.psi`).
        """
        return asyncio.run(
            self.aintersection_sum(
                ids,
                values,
                purpose=purpose,
                legal_basis=legal_basis,
                job_id=job_id,
                timeout_s=timeout_s,
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
        )

    # -------------------------------------------------------------- node info
    def node_info(self) -> list[NodeInfo]:
        """Ask every node for its datasets, declared group values and ledger head."""
        return asyncio.run(self.anode_info())

    async def anode_info(self) -> list[NodeInfo]:
        """Async form of :meth:`node_info`."""

        async def one(
            stub: query_pb2_grpc.QueryServiceStub, node: NodeEndpoint
        ) -> query_pb2.NodeInfoResponse:
            reply: query_pb2.NodeInfoResponse = await stub.NodeInfo(
                query_pb2.NodeInfoRequest(), timeout=self.config.timeout_s
            )
            return reply

        answers = await self._fan_out(one)
        for node, a in zip(self.config.nodes, answers, strict=True):
            if a.node != node.name:
                raise ProtocolError(
                    f"node at {node.address} calls itself {a.node!r}, not {node.name!r}"
                )
        return [
            NodeInfo(
                node=a.node,
                agency=a.agency,
                datasets={d.name: tuple(d.columns) for d in a.datasets},
                ledger=_assemble.ledger_head(a.node, a.ledger),
                group_domains={
                    d.name: {
                        g.column: tuple(
                            v for v in map(literal_from_proto, g.values) if v is not None
                        )
                        for g in d.group_domains
                    }
                    for d in a.datasets
                },
                certificate_pem=bytes(a.certificate_pem),
                required_signoff={d.name: tuple(d.required_signoff) for d in a.datasets},
            )
            for a in answers
        ]

    # ---------------------------------------------------------------- plumbing
    async def _signoffs(
        self, spec: QuerySpec, infos: Sequence[NodeInfo], job: str, purpose: str, legal: str
    ) -> dict[str, list[query_pb2.SignOff]]:
        """Ask every approver a node requires for ``spec.dataset``; target -> sign-offs."""
        wanted: dict[str, list[str]] = {}  # approver -> target nodes
        for info in infos:
            for approver in info.required_signoff.get(spec.dataset, ()):
                wanted.setdefault(approver, []).append(info.node)
        if not wanted:
            return {}
        known = {e.name: e for e in (*self.config.approvers, *self.config.nodes)}
        missing = sorted(set(wanted) - set(known))
        if missing:
            raise QueryError(
                f"{spec.dataset!r} needs sign-off by {', '.join(missing)}: add them to "
                "[[approvers]] in the federation file"
            )

        async def ask(
            stub: query_pb2_grpc.QueryServiceStub, approver: NodeEndpoint
        ) -> list[tuple[str, query_pb2.SignOff]]:
            out = []
            for target in wanted[approver.name]:
                header = new_header(self.config.analyst, approver.name, job, purpose, legal)
                body = query_pb2.SignOffRequestBody(
                    header=header_to_proto(header), target_node=target, dataset=spec.dataset
                ).SerializeToString()
                signed = common_pb2.SignedRequest(
                    body=body, signature=sign_body(body, self._signing_key)
                )
                grant: query_pb2.SignOff = await stub.GrantSignOff(
                    signed, timeout=self.config.timeout_s
                )
                out.append((target, grant))
            return out

        result: dict[str, list[query_pb2.SignOff]] = {}
        for pairs in await self._fan_out(ask, [known[a] for a in sorted(wanted)]):
            for target, grant in pairs:
                result.setdefault(target, []).append(grant)
        return result

    async def _fan_out(
        self,
        call: Callable[[query_pb2_grpc.QueryServiceStub, NodeEndpoint], Awaitable[T]],
        endpoints: Sequence[NodeEndpoint] | None = None,
    ) -> list[T]:
        nodes = list(self.config.nodes if endpoints is None else endpoints)
        creds = channel_credentials(self._tls)
        channels = [
            grpc.aio.secure_channel(
                node.address,
                creds,
                options=[
                    ("grpc.ssl_target_name_override", node.name),
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
            )
            for node in nodes
        ]
        try:
            tasks = [
                self._guarded(node, call(query_pb2_grpc.QueryServiceStub(ch), node))
                for ch, node in zip(channels, nodes, strict=True)
            ]
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await asyncio.gather(*(ch.close() for ch in channels))
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            first = errors[0]
            if len(errors) > 1 and isinstance(first, RemoteError):
                first.args = (f"{first.args[0]} (and {len(errors) - 1} more node(s) failed)",)
            raise first
        return [r for r in results if not isinstance(r, BaseException)]

    async def _guarded(self, node: NodeEndpoint, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _UNAVAILABLE:
                raise NodeUnavailable(
                    node.name,
                    code.name,
                    f"no answer from {node.address} within {self.config.timeout_s:g}s"
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED
                    else f"cannot reach {node.address}: {_short(exc.details())}",
                ) from exc
            raise RemoteError(node.name, code.name, exc.details() or "") from exc


def _short(text: str | None) -> str:
    return (text or "").splitlines()[0][:200] if text else "unavailable"


def new_job_id() -> str:
    """Return a fresh random job id."""
    return f"job-{secrets.token_hex(8)}"
