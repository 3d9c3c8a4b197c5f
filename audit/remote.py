"""Client of a node's LedgerService (grpc.aio): fetch checkpoints, entries, proofs; witnessing.

Used by the auditor's ``datafed-audit verify --node`` (which also asks the witnesses for
their newest cosigned checkpoints, :func:`ask_witnesses`) and by nodes asking witnesses to
cosign.  gRPC errors are translated here, at the boundary, into :mod:`audit.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from audit.checkpoint import add_signatures, open_checkpoint
from audit.errors import AuditError, InvalidSignature, WitnessRefusal
from audit.ledger import Ledger
from audit.ledger_serde import (
    MAX_ENTRIES_PER_CALL,
    cosignature_from_proto,
    entries_from_proto,
    proof_hashes,
)
from audit.note import NoteSignature, Verifier, parse_note
from audit.policy import Policy
from audit.witness_state import WitnessView
from datafed.proto.v1 import ledger_pb2, ledger_pb2_grpc

__all__ = ["LedgerClient", "RemoteError", "ask_witnesses", "mtls_channel", "request_cosignature"]


class RemoteError(AuditError):
    """A node could not be reached or answered with an error."""


def mtls_channel(
    address: str, ca: Path, cert: Path, key: Path, server_name: str | None = None
) -> grpc.aio.Channel:
    """Open an mTLS channel to ``address`` with the federation CA and the caller's cert/key."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, creds, options=options)


class LedgerClient:
    """Typed calls to one node's LedgerService over ``channel``."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 30.0) -> None:
        self.stub = ledger_pb2_grpc.LedgerServiceStub(channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    async def checkpoint(self) -> str:
        """Return the node's latest signed checkpoint note."""
        msg = await self._call(self.stub.GetCheckpoint, ledger_pb2.GetCheckpointRequest())
        return bytes(msg.note).decode("utf-8", errors="replace")

    async def entries(
        self, start: int, end: int, progress: Callable[[int], None] | None = None
    ) -> list[bytes]:
        """Return leaves ``[start, end)``, fetched in chunks of 1000."""
        return (await self.entries_with_private(start, end, progress))[0]

    async def entries_with_private(
        self, start: int, end: int, progress: Callable[[int], None] | None = None
    ) -> tuple[list[bytes], dict[int, bytes]]:
        """Return leaves ``[start, end)`` and their private-part openings by index."""
        out: list[bytes] = []
        private: dict[int, bytes] = {}
        for lo in range(start, end, MAX_ENTRIES_PER_CALL):
            hi = min(end, lo + MAX_ENTRIES_PER_CALL)
            req = ledger_pb2.GetEntriesRequest(start=lo, end=hi)
            msg = await self._call(self.stub.GetEntries, req)
            try:
                leaves, parts = entries_from_proto(msg, lo, hi - lo)
            except ValueError as exc:
                raise RemoteError(str(exc)) from None
            out.extend(leaves)
            private.update(parts)
            if progress is not None:
                progress(hi - lo)
        return out, private

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the inclusion proof of ``index`` in the tree of ``size``."""
        req = ledger_pb2.GetInclusionProofRequest(index=index, tree_size=size)
        msg = await self._call(self.stub.GetInclusionProof, req)
        return self._hashes(msg.hashes)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Return the consistency proof between tree sizes ``size1`` and ``size2``."""
        req = ledger_pb2.GetConsistencyProofRequest(size1=size1, size2=size2)
        msg = await self._call(self.stub.GetConsistencyProof, req)
        return self._hashes(msg.hashes)

    async def witnessed(self, origins: Sequence[str] = ()) -> dict[str, bytes]:
        """The witness's newest cosigned checkpoint of each of ``origins`` (default: all).

        The notes are returned by the origin their text names, unverified (the caller
        checks them against its pinned keys).
        """
        req = ledger_pb2.GetWitnessedCheckpointsRequest(origins=list(origins))
        msg = await self._call(self.stub.GetWitnessedCheckpoints, req)
        out: dict[str, bytes] = {}
        for cp in msg.checkpoints:
            note = bytes(cp.note)
            try:
                origin = parse_note(note)[0].split("\n", 1)[0]
            except InvalidSignature:
                raise RemoteError("witness answered with a malformed checkpoint") from None
            out.setdefault(origin, note)
        return out

    async def add_checkpoint(self, note: str, old_size: int, proof: list[bytes]) -> NoteSignature:
        """Ask the witness behind this channel to cosign ``note``.

        Raises
        ------
        WitnessRefusal
            If the witness refused (``conflict``/``fork`` carry its size).
        """
        req = ledger_pb2.AddCheckpointRequest(
            old_size=old_size, consistency_proof=proof, checkpoint=note.encode()
        )
        try:
            call = self.stub.AddCheckpoint(req, timeout=self.timeout)
            msg = await call
        except grpc.aio.AioRpcError as exc:
            size = dict(exc.trailing_metadata() or ()).get("witness-size", "0")
            reason = (exc.details() or "").removeprefix("witness refused: ")
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise WitnessRefusal(reason, int(str(size))) from None
            raise RemoteError(f"witness answered {exc.code().name}: {exc.details()}") from None
        text = note[: note.rfind("\n\n") + 1]
        try:
            return cosignature_from_proto(msg, text)
        except ValueError as exc:
            raise RemoteError(str(exc)) from None

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RemoteError(f"node answered {exc.code().name}: {exc.details()}") from None

    @staticmethod
    def _hashes(hashes: object) -> list[bytes]:
        try:
            return proof_hashes(hashes)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RemoteError(str(exc)) from None


def _witness_size(ledger: Ledger, witness: Verifier) -> int:
    """The largest stored checkpoint that carries a valid cosignature by ``witness``."""
    best = 0
    for note in ledger.checkpoints():
        try:
            opened = open_checkpoint(note, ledger.verifier)
            if witness.name in opened.cosigners([witness]):
                best = max(best, opened.checkpoint.size)
        except InvalidSignature:
            continue
    return best


async def request_cosignature(ledger: Ledger, client: LedgerClient, witness: Verifier) -> str:
    """Have ``witness`` cosign the ledger's current checkpoint; store and return the note.

    The old size is the largest checkpoint the witness cosigned before (as stored in the
    ledger); on a ``conflict`` refusal the witness's own size is used once more.

    Raises
    ------
    WitnessRefusal
        If the witness refuses (e.g. it saw a fork), or the node cannot prove consistency.
    RemoteError
        If the witness is unreachable or its answer does not verify.
    """
    note = ledger.checkpoint()
    size = open_checkpoint(note, ledger.verifier).checkpoint.size
    old = _witness_size(ledger, witness)
    for attempt in range(2):
        proof = ledger.consistency_proof(old, size) if 0 < old < size else []
        try:
            sig = await client.add_checkpoint(note, old, proof)
            break
        except WitnessRefusal as exc:
            if attempt or exc.reason != "conflict" or exc.witness_size > size:
                raise
            old = exc.witness_size
    try:
        cosigned = open_checkpoint(add_signatures(note, [sig]), ledger.verifier)
        valid = witness.name in cosigned.cosigners([witness])
    except InvalidSignature:
        valid = False
    if not valid:
        raise RemoteError("witness answered with a cosignature that does not verify")
    return ledger.add_cosignatures(size, [sig])


def _server_name(witness: str) -> str:
    """The TLS name of a witness's node: the last part of its key name."""
    return witness.rsplit("/", 1)[-1]


async def ask_witnesses(
    policy: Policy, origin: str, tls: tuple[Path, Path, Path], timeout: float = 15.0
) -> list[WitnessView]:
    """Ask each witness with an address in ``policy`` for its newest checkpoint of ``origin``.

    ``tls`` is the auditor's ``(ca, cert, key)``.  A witness that cannot be reached (or
    answers with an error) gives a view saying so; nothing it says is verified here.
    """
    ca, cert, key = tls

    async def ask(name: str, address: str) -> WitnessView:
        try:
            async with mtls_channel(address, ca, cert, key, _server_name(name)) as channel:
                notes = await LedgerClient(channel, timeout).witnessed([origin])
        except RemoteError as exc:
            return WitnessView(name, address, problem=f"unreachable or refused: {exc}")
        return WitnessView(name, address, {o: n for o, n in notes.items() if o == origin})

    names = dict.fromkeys(w.name for w in policy.witnesses)
    asks = [ask(n, policy.witness_addresses[n]) for n in names if n in policy.witness_addresses]
    return list(await asyncio.gather(*asks))
