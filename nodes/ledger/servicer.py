"""The node's LedgerService: checkpoints, entries and proofs of its own log; witnessing others.

Thin over :mod:`audit`: every call validates its arguments first (bad input is
``INVALID_ARGUMENT`` and writes nothing), reads through the ledger off the event loop, on
threads of its own (:data:`LEDGER_THREADS`: analysts' compute never makes an auditor or a
witness wait), and converts with :mod:`audit.ledger_serde`.  ``AddCheckpoint`` and
``GetWitnessedCheckpoints`` are served only where the node is also a witness (``witness``
given); a refusal carries the witness's size in the trailing metadata key
``witness-size``.  ``GetWitnessedCheckpoints`` lets an auditor check a log against the
newest checkpoint this witness cosigned of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import grpc

from audit import Ledger, WitnessRefusal
from audit.ledger_serde import (
    MAX_ENTRIES_PER_CALL,
    cosignature_to_proto,
    entries_to_proto,
    proof_hashes,
)
from audit.witness import WitnessStore
from datafed.proto.v1 import ledger_pb2, ledger_pb2_grpc
from nodes.errors import NodeError
from nodes.gate import Context, peer_identity

__all__ = ["LEDGER_SERVICE_NAME", "READ_ROLES", "add_ledger_services", "role_check"]

LEDGER_SERVICE_NAME = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name
#: Roles allowed per RPC.  Entries name requesters, purposes and decisions and come with
#: their private parts (per-node facts), so only auditors and witnesses read them; nodes and
#: analysts get checkpoints and proofs (an analyst's own entries reach it in receipts).
READ_ROLES: dict[str, frozenset[str]] = {
    "GetCheckpoint": frozenset({"analyst", "auditor", "node", "witness"}),
    "GetEntries": frozenset({"auditor", "witness"}),
    "GetInclusionProof": frozenset({"analyst", "auditor", "node", "witness"}),
    "GetConsistencyProof": frozenset({"analyst", "auditor", "node", "witness"}),
    "AddCheckpoint": frozenset({"node"}),
    "GetWitnessedCheckpoints": frozenset({"auditor", "node", "witness"}),
}
#: Bounds of a ``GetWitnessedCheckpoints`` request.
MAX_ORIGINS_PER_CALL = 100
MAX_ORIGIN_BYTES = 1024
_REFUSAL_CODES = {
    "unknown-origin": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.FAILED_PRECONDITION,
    "fork": grpc.StatusCode.FAILED_PRECONDITION,
}
Authorize = Callable[[Any, str], None]
T = TypeVar("T")
#: Threads of the ledger's blocking reads, shared with nothing else.
LEDGER_THREADS = 4
_POOL: ThreadPoolExecutor | None = None


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the ledger's own threads (created on first use)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(LEDGER_THREADS, thread_name_prefix="datafed-ledger")
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


def role_check(context: Context, rpc: str) -> None:
    """Default authorisation: the client certificate's role must be allowed for ``rpc``."""
    identity = peer_identity(context)
    if identity.role not in READ_ROLES[rpc]:
        raise PermissionError(f"role {identity.role} may not call {rpc}")


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """gRPC LedgerService over one node's ledger (and optional witness state)."""

    def __init__(
        self, ledger: Ledger, witness: WitnessStore | None, authorize: Authorize | None
    ) -> None:
        self.ledger = ledger
        self.witness = witness
        self.authorize = authorize

    async def _guard(self, context: Context, rpc: str) -> None:
        if self.authorize is None:
            return
        try:
            self.authorize(context, rpc)
        except PermissionError as exc:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except NodeError as exc:
            await _abort(context, exc.code, str(exc))

    async def GetCheckpoint(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetCheckpointRequest, context: Context
    ) -> ledger_pb2.SignedCheckpoint:
        """Return the latest signed checkpoint (signing one for the current size if needed)."""
        await self._guard(context, "GetCheckpoint")
        note = await _blocking(self.ledger.checkpoint)
        return ledger_pb2.SignedCheckpoint(note=note.encode())

    async def GetEntries(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetEntriesRequest, context: Context
    ) -> ledger_pb2.GetEntriesResponse:
        """Return leaves ``[start, end)`` and their private parts (at most 1000, all logged)."""
        await self._guard(context, "GetEntries")
        start, end, size = request.start, request.end, self.ledger.head().size
        if not start < end <= size or end - start > MAX_ENTRIES_PER_CALL:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"need start < end <= {size} and at most {MAX_ENTRIES_PER_CALL} entries, "
                f"got [{start}, {end})",
            )
        leaves, private = await _blocking(self._read, start, end)
        return entries_to_proto(start, leaves, private)

    def _read(self, start: int, end: int) -> tuple[list[bytes], dict[int, bytes]]:
        return self.ledger.leaves(start, end), self.ledger.private_parts(start, end)

    async def _proof(
        self,
        context: Context,
        rpc: str,
        prove: Callable[[int, int], list[bytes]],
        first: int,
        size: int,
    ) -> tuple[int, list[bytes]]:
        """``prove(first, size)`` off the event loop (``size`` 0: current); bad input aborts."""
        await self._guard(context, rpc)
        size = size or self.ledger.head().size
        try:
            return size, await _blocking(prove, first, size)
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def GetInclusionProof(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetInclusionProofRequest, context: Context
    ) -> ledger_pb2.InclusionProof:
        """Return the inclusion proof of ``index`` in the tree of ``tree_size`` (0: current)."""
        size, hashes = await self._proof(
            context,
            "GetInclusionProof",
            self.ledger.inclusion_proof,
            request.index,
            request.tree_size,
        )
        return ledger_pb2.InclusionProof(index=request.index, tree_size=size, hashes=hashes)

    async def GetConsistencyProof(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetConsistencyProofRequest, context: Context
    ) -> ledger_pb2.ConsistencyProof:
        """Return the consistency proof from ``size1`` to ``size2`` (0: current)."""
        size2, hashes = await self._proof(
            context,
            "GetConsistencyProof",
            self.ledger.consistency_proof,
            request.size1,
            request.size2,
        )
        return ledger_pb2.ConsistencyProof(size1=request.size1, size2=size2, hashes=hashes)

    async def AddCheckpoint(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.AddCheckpointRequest, context: Context
    ) -> ledger_pb2.AddCheckpointResponse:
        """Cosign another log's checkpoint if it is consistent with what this witness holds."""
        await self._guard(context, "AddCheckpoint")
        if self.witness is None:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this node is not a witness")
        try:
            proof = proof_hashes(request.consistency_proof)
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            sig = await _blocking(
                self.witness.add_checkpoint, bytes(request.checkpoint), request.old_size, proof
            )
        except WitnessRefusal as exc:
            context.set_trailing_metadata((("witness-size", str(exc.witness_size)),))
            code = _REFUSAL_CODES.get(exc.reason, grpc.StatusCode.INVALID_ARGUMENT)
            await _abort(context, code, f"witness refused: {exc.reason}")
        return cosignature_to_proto(sig)

    async def GetWitnessedCheckpoints(  # noqa: N802 - gRPC method name
        self, request: ledger_pb2.GetWitnessedCheckpointsRequest, context: Context
    ) -> ledger_pb2.WitnessedCheckpoints:
        """Return the newest checkpoint this witness cosigned of each log asked for."""
        await self._guard(context, "GetWitnessedCheckpoints")
        if self.witness is None:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this node is not a witness")
        origins = list(request.origins)
        if len(origins) > MAX_ORIGINS_PER_CALL or any(
            len(o.encode()) > MAX_ORIGIN_BYTES for o in origins
        ):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_ORIGINS_PER_CALL} origins of at most {MAX_ORIGIN_BYTES} bytes",
            )
        notes = await _blocking(self.witness.newest, origins or None)
        return ledger_pb2.WitnessedCheckpoints(
            checkpoints=[ledger_pb2.SignedCheckpoint(note=n.encode()) for n in notes.values()]
        )


def add_ledger_services(
    server: grpc.aio.Server,
    ledger: Ledger,
    witness_store: WitnessStore | None = None,
    *,
    authorize: Authorize | None = role_check,
) -> None:
    """Register the LedgerService (and witness RPC if ``witness_store``) on ``server``.

    Parameters
    ----------
    server : grpc.aio.Server
        The node's server, not yet started.
    ledger : Ledger
        The node's own log.
    witness_store : WitnessStore or None
        The node's witness state, when it witnesses other nodes' logs.
    authorize : callable or None
        ``authorize(context, rpc_name)`` raising PermissionError (or a NodeError) to refuse;
        the default checks the client certificate's role against :data:`READ_ROLES`.
        ``None`` disables the check (plaintext ``--insecure`` mode only).
    """
    servicer = LedgerServicer(ledger, witness_store, authorize)
    ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
