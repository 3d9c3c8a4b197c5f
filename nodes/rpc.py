"""The node's one RPC pipeline: every signed call, from the peer's certificate to the receipt.

Each servicer method is the part that differs; :func:`signed_call` does the rest::

    async with signed_call(ctx, context, request, "query") as call:
        body = call.open(parse_query)              # certificate, signature, header, replay
        grant = await call.admit(use)              # policy engine: approved + epsilon, atomic
        result = await call.compute(work, ...)     # off the event loop
        await call.release(digest, reason)         # released, with the result's digest
        response.receipt.CopyFrom(await call.receipt())  # proof of this call's entries

Anything raised inside the block ends the call the same way: a
:class:`~nodes.errors.NodeError` is recorded as ``denied`` with its status and message
and the RPC aborts with that status; any other exception is logged, recorded and sent
as an internal error with no detail (``docs/architecture.md``). Every entry of the call
carries the same caller, header, dataset, operation and request digest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from audit import Receipt
from audit.ledger_serde import receipt_to_proto
from datafed.errors import SignatureError
from datafed.pki.ca import Identity
from datafed.proto.v1 import common_pb2, ledger_pb2, query_pb2
from datafed.wire.signing import RequestHeader, now_ms
from datafed.wire.statement import SignedJobStatement, open_job_statement
from nodes.context import NodeContext
from nodes.errors import InvalidRequest, NodeError, ReleaseFailed, Unauthenticated, status_of
from nodes.gate import Context, open_signed, peer_identity, request_digest
from nodes.policy import Grant, Use

__all__ = ["Context", "SignedCall", "parser", "signed_call"]

log = logging.getLogger("datafed.node")
M = TypeVar("M")
B = TypeVar("B", bound=Message)
T = TypeVar("T")
Parse = Callable[[bytes], tuple[common_pb2.RequestHeader, M]]


def parser(cls: type[B]) -> Parse[B]:
    """The ``parse`` of :meth:`SignedCall.open` for a body message ``cls`` holding its header."""

    def parse(body: bytes) -> tuple[common_pb2.RequestHeader, B]:
        msg = cls.FromString(body)
        return msg.header, msg  # type: ignore[attr-defined]

    return parse


class SignedCall:
    """One signed RPC at the node: who asked, what it recorded, what it returns."""

    def __init__(
        self,
        ctx: NodeContext,
        context: Context,
        signed: common_pb2.SignedRequest | None,
        operation: str,
        protection: str = "",
    ) -> None:
        self.ctx = ctx
        self.context = context
        self.operation = operation
        self.protection = protection
        self.signed = signed or common_pb2.SignedRequest()
        #: Hex SHA-256 of the signed body: every entry of this call records it.
        self.digest = request_digest(signed) if signed is not None else ""
        self.identity: Identity | None = None
        self.header: RequestHeader | None = None
        self.dataset = ""
        #: Public details recorded on every entry of this call.
        self.details: dict[str, str] = {}
        #: This call's entries, in order (what its receipt proves).
        self.indexes: list[int] = []

    def open(self, parse: Parse[M], *, identity: Identity | None = None) -> M:
        """Authenticate and parse the signed request (see :func:`nodes.gate.open_signed`).

        ``identity``: the requester when it is not the TLS peer (a SuperNode relaying an
        analyst's request); by default the peer certificate's identity.
        """
        self.identity = identity or peer_identity(self.context)
        self.header, body = open_signed(
            self.signed, self.identity, self.ctx.name, self.ctx.nonces, now_ms(), parse
        )
        return body

    def open_statement(self, msg: common_pb2.SignedStatement) -> SignedJobStatement:
        """Verify the requester's job statement; every later entry of the call names it."""
        assert self.identity is not None
        try:
            statement = open_job_statement(msg, self.identity.signing_key)
        except SignatureError as exc:
            raise Unauthenticated("the job statement does not verify") from exc
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        self.details["statement"] = statement.digest
        return statement

    async def record(
        self,
        *,
        decision: str,
        reason: str,
        epsilon: float = 0.0,
        result_digest: str = "",
        details: Mapping[str, str] | None = None,
        private: Mapping[str, str] | None = None,
    ) -> int:
        """Append one entry of this call; return its index once durable."""
        index = await self.ctx.record(
            caller=self.identity,
            header=self.header,
            dataset=self.dataset,
            operation=self.operation,
            protection=self.protection,
            decision=decision,
            reason=reason,
            request_digest=self.digest,
            result_digest=result_digest,
            epsilon=epsilon,
            details={**self.details, **(details or {})},
            private=private,
        )
        self.indexes.append(index)
        return index

    async def admit(self, use: Use) -> Grant:
        """Ask the policy engine; the ``approved`` entry is this call's.

        Admission runs to its end even if the call is cut meanwhile (its caller gone, a
        deadline): an ``approved`` entry is always matched by its epsilon charged.
        """
        self.dataset = use.dataset
        admission = asyncio.ensure_future(self.ctx.policy.admit(use, self.record))
        try:
            return await asyncio.shield(admission)
        except asyncio.CancelledError:
            admission.add_done_callback(_retrieve)
            raise

    async def release(
        self,
        result_digest: str,
        reason: str,
        *,
        details: Mapping[str, str] | None = None,
        private: Mapping[str, str] | None = None,
    ) -> int:
        """Record what leaves the node (``released`` with its digest)."""
        return await self.record(
            decision="released",
            reason=reason,
            result_digest=result_digest,
            details=details,
            private=private,
        )

    async def compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (a dataset read, crypto) off the event loop, in turn.

        The node's compute threads are shared fairly across requesters
        (:class:`nodes.fair.FairPool`): this call's requester waits for its turn.
        """
        who = str(self.identity) if self.identity is not None else "unknown"
        return await self.ctx.fair.run(who, fn, *args)

    def head(self, indexes: Sequence[int] | None = None) -> query_pb2.LedgerHead:
        """The ledger head, naming this call's entries (or ``indexes``)."""
        return self.ctx.head_proto(self.indexes if indexes is None else indexes)

    async def proof(self, indexes: Sequence[int] | None = None) -> Receipt:
        """A receipt proving this call's entries (or ``indexes``) under a signed checkpoint."""
        wanted = list(self.indexes if indexes is None else indexes)
        return await asyncio.to_thread(self.ctx.ledger.receipt, wanted)

    async def receipt(self, indexes: Sequence[int] | None = None) -> ledger_pb2.Receipt:
        """:meth:`proof` in its wire form."""
        return receipt_to_proto(await self.proof(indexes))

    async def deny(self, exc: NodeError) -> NoReturn:
        """Record ``exc`` as ``denied``, then abort the RPC with its status.

        A release that failed (:class:`~nodes.errors.ReleaseFailed`) says one fixed text;
        its real reason goes to the entry's private part, for auditors only.
        """
        code, message = status_of(exc)
        private = {"reason": exc.private_reason} if isinstance(exc, ReleaseFailed) else None
        await self.record(decision="denied", reason=f"{code.name}: {message}", private=private)
        await self.context.abort(code, message)
        raise AssertionError("unreachable")  # abort() always raises


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read the outcome of work nobody awaits any more (no "never retrieved" warning)."""
    if not task.cancelled() and task.exception() is not None:
        log.info("admission of a cut call ended with: %s", task.exception())


@asynccontextmanager
async def signed_call(
    ctx: NodeContext,
    context: Context,
    signed: common_pb2.SignedRequest | None,
    operation: str,
    *,
    protection: str = "",
) -> AsyncIterator[SignedCall]:
    """One signed call: anything raised inside is recorded as ``denied`` and aborts the RPC."""
    call = SignedCall(ctx, context, signed, operation, protection)
    try:
        yield call
    except NodeError as exc:
        await call.deny(exc)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.exception("%s failed (job %s)", operation, call.header.job_id if call.header else "")
        await call.deny(NodeError(f"internal error during {operation}"))
        raise AssertionError("unreachable") from exc
