"""Witnessing between nodes: this node's witness state, and publishing its own checkpoints.

A node configured with ``[witness]`` cosigns the checkpoints of the peer logs it pins
(c2sp.org/tlog-witness semantics, see :class:`audit.witness.WitnessStore`).  A node
configured with ``[publish]`` runs a background task that every ``interval_s`` seconds, and
once more at shutdown, asks each of its witnesses to cosign its latest checkpoint
(:func:`audit.remote.request_cosignature`) and stores the cosignatures on its ledger.
Nothing here may stop the node: every failure is logged, and a refusal (a witness that holds
a checkpoint this log cannot extend, i.e. a rollback or a split view) is logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit import WitnessRefusal, ledger_origin, witness_name
from audit.checkpoint import log_verifier, witness_verifier
from audit.errors import AuditError
from audit.note import Verifier
from audit.remote import LedgerClient, mtls_channel, request_cosignature
from audit.witness import WitnessStore
from datafed.pki.ca import Identity
from datafed.pki.peers import verify_peer
from nodes.config import PublishWitness
from nodes.context import NodeContext

__all__ = ["Publisher", "open_witness_store", "witness_name"]

log = logging.getLogger("datafed.node")
#: Seconds the final publishing round at shutdown may take.
FINAL_ROUND_S = 5.0


def _raw(identity: Identity) -> bytes:
    return identity.signing_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def open_witness_store(ctx: NodeContext) -> WitnessStore | None:
    """Open ``state_dir/witness.sqlite`` pinning the ``[witness]`` peers; ``None`` if unset.

    Raises
    ------
    datafed.errors.PkiError
        If a peer certificate is not a node certificate issued by the federation CA.
    ValueError
        If the node lists itself as a peer.
    """
    section = ctx.config.witness
    if section is None:
        return None
    logs: list[Verifier] = []
    for path in section.peers:
        peer = verify_peer(path.read_bytes(), ctx.anchors_pem, role="node")
        if peer.name == ctx.name:
            raise ValueError(f"witness.peers: node {ctx.name} cannot witness its own log")
        logs.append(log_verifier(ledger_origin(peer.name), _raw(peer)))
    path = ctx.config.node.state_dir / "witness.sqlite"
    store = WitnessStore(path, witness_name(ctx.name), ctx.signing_key, logs)
    log.info("witnessing the logs of %s", ", ".join(v.name for v in logs))
    return store


@dataclass
class _Target:
    """One witness to publish to: its verifier, client and the size it last cosigned."""

    name: str
    verifier: Verifier
    client: LedgerClient
    channel: grpc.aio.Channel
    cosigned: int = -1


@dataclass
class Publisher:
    """Background task asking the ``[publish]`` witnesses to cosign this node's checkpoints."""

    ctx: NodeContext
    targets: list[_Target] = field(default_factory=list)
    interval_s: float = 30.0
    _task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, ctx: NodeContext) -> Publisher | None:
        """Verify the witnesses' certificates and open channels; ``None`` without ``[publish]``.

        Raises
        ------
        datafed.errors.PkiError
            If a witness certificate is not issued by the federation CA or names another party.
        """
        section = ctx.config.publish
        if section is None:
            return None
        targets = [_target(ctx, w, section.timeout_s) for w in section.witnesses]
        return cls(ctx, targets, section.interval_s)

    def start(self) -> None:
        """Start the periodic publishing task on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name="datafed-publish")

    async def _loop(self) -> None:
        while True:
            await self.publish_once()
            await asyncio.sleep(self.interval_s)

    async def publish_once(self) -> dict[str, bool]:
        """Ask every witness that lacks the current checkpoint; return ``{name: cosigned}``."""
        size = self.ctx.ledger.head().size
        todo = [t for t in self.targets if size > 0 and t.cosigned != size]
        done = await asyncio.gather(*(self._ask(t) for t in todo))
        return {t.name: ok for t, ok in zip(todo, done, strict=True)}

    async def _ask(self, target: _Target) -> bool:
        try:
            note = await request_cosignature(self.ctx.ledger, target.client, target.verifier)
        except WitnessRefusal as exc:
            level = logging.CRITICAL if exc.reason == "fork" else logging.ERROR
            log.log(
                level,
                "WITNESS REFUSED: %s refused this log's checkpoint (%s; it holds size %d): "
                "this ledger is not consistent with what the witness cosigned before",
                target.name,
                exc.reason,
                exc.witness_size,
            )
            return False
        except (AuditError, ValueError, OSError) as exc:
            log.warning("witness %s did not cosign: %s", target.name, exc)
            return False
        except Exception:  # never let publishing crash the node
            log.exception("witness %s: unexpected error while publishing", target.name)
            return False
        target.cosigned = int(note.split("\n", 2)[1])
        log.info("checkpoint %d cosigned by witness %s", target.cosigned, target.name)
        return True

    async def stop(self) -> None:
        """Stop the periodic task, run one last bounded round, close the channels."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.publish_once(), FINAL_ROUND_S)
        except asyncio.TimeoutError:
            log.warning("final publishing round did not finish in %.0f s", FINAL_ROUND_S)
        for t in self.targets:
            await t.channel.close()


def _target(ctx: NodeContext, w: PublishWitness, timeout_s: float) -> _Target:
    identity = verify_peer(w.cert.read_bytes(), ctx.anchors_pem, role=w.role)
    if identity.name != w.name:
        from datafed.errors import PkiError

        raise PkiError(f"publish.witnesses: {w.cert.name} is for {identity}, not {w.name}")
    files = ctx.config.tls
    channel = mtls_channel(  # the partners' CAs too: witnesses may be across the border
        w.address, ctx.anchors_pem, files.cert, files.key, server_name=w.name
    )
    verifier = witness_verifier(witness_name(w.name), _raw(identity))
    return _Target(w.name, verifier, LedgerClient(channel, timeout_s), channel)
