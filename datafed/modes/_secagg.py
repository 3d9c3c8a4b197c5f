"""``secagg``: Bonawitz et al. secure aggregation among the nodes, the analyst as server.

Node side: the Query advertises two fresh X25519 keys, signed with the node's certificate
key (round 0); the steps run the client rounds of :class:`~datafed.protocols.SecAggClient`:
``share-keys`` (Shamir shares of the masking key and self-mask seed, AES-GCM encrypted to
each peer), ``masked-input`` (the vector plus its checksum slot, masked), ``consistency``
(the node signs the survivor set U3 it is shown, once) and ``unmask`` (only for that U3,
and only when at least ``t`` survivors' signatures over it verify).
Client side: the analyst runs :class:`~datafed.protocols.SecAggServer`, relaying each
round; a node that cannot be reached in a round drops out, and the total of the survivors
still comes out while at least ``t`` remain (``2t > n``).

Who learns what: the analyst sees signed public keys, ciphertexts between nodes and masked
vectors (each uniformly random) and learns the survivors' total; a node learns nothing of
the others' values.  Trust: semi-honest, threshold ``t`` of ``n`` (docs/invisibility.md).  Because
every advertised key is signed and checked by the peers, the analyst cannot substitute
keys to open the shares sent between nodes; because every node signs one survivor set and
unmasks only with ``t`` signatures on it (``2t > n``), an analyst that tells some nodes a
node survived and others that it dropped cannot collect both kinds of its shares
(Bonawitz's consistency check, ``datafed.protocols``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError
from pydantic import Field

import datafed.modes._secagg_wire as wire
from datafed.errors import NodeUnavailable, ProtocolError
from datafed.hazmat import RingArray
from datafed.modes._base import (
    ModeContext,
    ModeOptions,
    NodeEnv,
    SteppedMode,
    check_int64,
    read_params,
)
from datafed.modes._envelope import check_roster, peers
from datafed.modes._integrity import check_ring, with_ring_checksum
from datafed.modes._steps import Combined, NodeAnswer, StepSession, Totals
from datafed.pki.ca import Identity
from datafed.proto.v1 import protocol_pb2
from datafed.protocols import (
    AdvertiseKeys,
    KeyRoster,
    MachineError,
    SecAggClient,
    SecAggServer,
    Survivors,
)

__all__ = ["SecAggMode", "default_threshold"]


def default_threshold(n: int) -> int:
    """The smallest ``t`` with ``2t > n`` (at least 2): a majority must survive."""
    return max(2, n // 2 + 1)


def _read(
    env: NodeEnv, params: bytes
) -> tuple[protocol_pb2.SecAggParams, list[Identity], list[int]]:
    """The parameters, the participants and this node's ids among them; ValueError."""
    msg = read_params(protocol_pb2.SecAggParams, params, "secagg")
    participants = peers(env, msg.participant_certificates, "participant")
    check_roster(env, participants)
    _check_threshold(msg.threshold, len(participants))
    ids = [i + 1 for i, p in enumerate(participants) if p.name == env.node]
    if not ids:
        raise ValueError("this node is not among the listed participants")
    return msg, participants, ids


def _check_threshold(t: int, n: int) -> None:
    if not (2 <= t <= n and 2 * t > n):
        raise ValueError(f"secagg threshold must satisfy 2 <= t <= n < 2t, got t={t}, n={n}")


def _check_required(env: NodeEnv, state: _NodeState, survivors: Sequence[int]) -> None:
    """Refuse to unmask a total that lacks a node the dataset requires (a dropout told)."""
    alive = set(survivors)
    lost = [
        p.name
        for i, p in enumerate(state.participants)
        if p.name in env.required and i + 1 not in alive
    ]
    if lost:
        raise ValueError(
            f"required node(s) {', '.join(sorted(lost))} did not survive; this node does not "
            "unmask a total without them"
        )


@dataclass
class _NodeState:
    client: SecAggClient
    x: RingArray
    participants: list[Identity]
    next_round: int = 1


class _SecAggOptions(ModeOptions):
    """``[modes.secagg]``: how many nodes must survive (default: a majority)."""

    threshold: int | None = Field(default=None, ge=2)


class SecAggMode(SteppedMode):
    """Masking among the nodes; the analyst relays and removes the masks of the total."""

    name = "secagg"
    summary = "Bonawitz masking among the nodes, survives dropouts: the analyst learns the total"
    steps = ("share-keys", "masked-input", "consistency", "unmask")
    Options = _SecAggOptions

    def __init__(self, threshold: int | None = None) -> None:
        if threshold is not None and threshold < 2:
            raise ValueError(f"secagg threshold must be at least 2, got {threshold}")
        self.threshold = threshold

    def _threshold(self, n: int) -> int:
        t = self.threshold or default_threshold(n)
        try:
            _check_threshold(t, n)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        return t

    # ------------------------------------------------------------------ node side
    @staticmethod
    def check_params(env: NodeEnv, params: bytes) -> None:
        """Participants exactly the roster, this node among them, an honest-majority threshold."""
        _read(env, params)

    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Round 0: keep the masked-to-be vector, advertise two signed public keys."""
        msg, participants, ids = _read(env, params)
        if env.stash is None:
            raise ValueError("this node cannot keep secagg protocol state")
        check_int64(values)
        x = with_ring_checksum(env.binding, values)
        client = SecAggClient(ids[0], threshold=msg.threshold, vector_length=int(x.size))
        adv = client.advertise_keys()
        env.stash.put(_NodeState(client, x, participants))
        digest = wire.advertise_digest(env.binding, adv.sender, adv.c_public, adv.s_public)
        return protocol_pb2.SecAggAdvertise(
            client_id=adv.sender,
            c_public=adv.c_public,
            s_public=adv.s_public,
            signature=env.signing_key.sign(digest),
        ).SerializeToString()

    @classmethod
    def step(cls, env: NodeEnv, state: object, round_: int, payload: bytes) -> bytes:
        """Rounds 1-4 of the client state machine; any failure ends this node's part."""
        if not isinstance(state, _NodeState):
            raise ValueError("this node holds no secagg state for this job")
        if round_ != state.next_round:
            raise ValueError(f"secagg expects round {state.next_round}, got {round_}")
        state.next_round = 0  # until this round succeeds: a failed round is final
        n = len(state.participants)
        try:
            if round_ == 1:
                out = cls._share_keys(env, state, payload).SerializeToString()
            elif round_ == 2:
                forwarded = wire.forwarded_from_proto(payload, n)
                masked = state.client.masked_input(forwarded, state.x)
                out = protocol_pb2.SecAggMasked(
                    client_id=masked.sender, masked=masked.masked
                ).SerializeToString()
            elif round_ == 3:
                msg = protocol_pb2.SecAggSurvivors.FromString(payload)
                if len(msg.clients) > n:
                    raise ValueError("too many survivors")
                if len(set(msg.clients)) < env.min_participants:
                    # Unmasking for fewer survivors would release a total of too few nodes.
                    raise ValueError(
                        f"fewer than {env.min_participants} survivors; this node does not unmask"
                    )
                _check_required(env, state, msg.clients)
                survivors = Survivors(tuple(msg.clients))
                state.client.consistency(survivors)
                out = protocol_pb2.SecAggConsistency(
                    client_id=state.client.client_id,
                    signature=env.signing_key.sign(wire.consistency_digest(env.binding, survivors)),
                ).SerializeToString()
            else:
                request = protocol_pb2.SecAggUnmaskRequest.FromString(payload)
                if len(request.clients) > n or len(request.signatures) > n:
                    raise ValueError("too many survivors")
                keys = [p.signing_key for p in state.participants]
                survivors, signers = wire.consistency_signers(request, env.binding, keys)
                shares = state.client.unmask(survivors, signers)
                out = wire.unmask_to_proto(shares).SerializeToString()
        except DecodeError as exc:
            raise ValueError(f"malformed secagg round {round_} message") from exc
        except MachineError as exc:
            raise ValueError(f"secagg round {round_} refused: {exc}") from exc
        state.next_round = round_ + 1 if round_ < 4 else 0
        return out

    @staticmethod
    def _share_keys(
        env: NodeEnv, state: _NodeState, payload: bytes
    ) -> protocol_pb2.SecAggShareKeys:
        roster = protocol_pb2.SecAggRoster.FromString(payload)
        n = len(state.participants)
        keys = []
        for item in roster.keys:
            if not 1 <= item.client_id <= n:
                raise ValueError("the roster names an unknown participant")
            signer = state.participants[item.client_id - 1].signing_key
            keys.append(wire.advertise_from_proto(item, env.binding, signer))
        sent = state.client.share_keys(KeyRoster(tuple(keys)))
        return protocol_pb2.SecAggShareKeys(
            client_id=sent.sender, ciphertexts=wire.ciphertexts_to_proto(sent.ciphertexts)
        )

    # ---------------------------------------------------------------- client side
    async def params(self, ctx: ModeContext) -> bytes:
        """Every node participates, client id = position + 1; threshold a majority."""
        return protocol_pb2.SecAggParams(
            participant_certificates=ctx.certificates_of(ctx.nodes),
            threshold=self._threshold(len(ctx.nodes)),
        ).SerializeToString()

    async def run_steps(
        self, session: StepSession, answers: Sequence[NodeAnswer], totals: Totals
    ) -> Combined:
        """Run the server rounds; nodes unreachable in a round drop out."""
        n = len(answers)
        server = SecAggServer(threshold=self._threshold(n), vector_length=totals.length)
        names, roster = _advertised(server, answers)
        try:
            run = _Rounds(session, server, names, n)
            await run.share_keys(roster)
            await run.masked_inputs()
            u3, signatures = await run.consistency()
            await run.unmask(u3, signatures)
            total = server.result()
        except MachineError as exc:
            raise ProtocolError(f"secure aggregation failed: {exc}") from exc
        return Combined(check_ring(session.binding, total), tuple(names[i] for i in u3))


def _advertised(
    server: SecAggServer, answers: Sequence[NodeAnswer]
) -> tuple[dict[int, str], protocol_pb2.SecAggRoster]:
    names: dict[int, str] = {}
    roster = protocol_pb2.SecAggRoster()
    for a in answers:
        try:
            msg = protocol_pb2.SecAggAdvertise.FromString(a.payload)
            server.receive_advertise(AdvertiseKeys(msg.client_id, msg.c_public, msg.s_public))
        except (DecodeError, MachineError) as exc:
            raise ProtocolError(f"node {a.node!r} advertised malformed secagg keys") from exc
        names[msg.client_id] = a.node
        roster.keys.append(msg)
    return names, roster


class _FromNode(Protocol):
    """A round's message that names the client that sent it."""

    @property
    def sender(self) -> int:
        """The sending client's id."""


_Sent = TypeVar("_Sent", bound=_FromNode)


@dataclass
class _Rounds:
    """The server's rounds over a step session, with dropout handling."""

    session: StepSession
    server: SecAggServer
    names: Mapping[int, str]
    n: int

    async def _round(self, round_: int, requests: Mapping[int, bytes]) -> dict[int, bytes]:
        """Send one round; return the replies of the nodes that could be reached."""
        ids = list(requests)
        results = await asyncio.gather(
            *(self.session.step(self.names[i], round_, requests[i]) for i in ids),
            return_exceptions=True,
        )
        out = {}
        for i, r in zip(ids, results, strict=True):
            if isinstance(r, NodeUnavailable):
                continue  # a dropout: the protocol tolerates it while t remain
            if isinstance(r, BaseException):
                raise r
            out[i] = r
        return out

    def _accept(
        self,
        round_: int,
        replies: Mapping[int, bytes],
        decode: Callable[[bytes], _Sent],
        receive: Callable[[_Sent], object],
    ) -> None:
        """Decode each node's reply, check that node sent it, and hand it to the server."""
        for i, reply in replies.items():
            try:
                msg = decode(reply)
                if msg.sender != i:
                    raise ValueError("wrong sender")
                receive(msg)
            except (DecodeError, ValueError, MachineError) as exc:
                raise self._bad(i, round_) from exc

    def _bad(self, i: int, round_: int) -> ProtocolError:
        return ProtocolError(f"node {self.names[i]!r} sent an invalid secagg round {round_} reply")

    async def share_keys(self, roster: protocol_pb2.SecAggRoster) -> None:
        """Round 1: every node Shamir-shares its keys to the others."""
        self.server.roster()
        raw = roster.SerializeToString()
        replies = await self._round(1, dict.fromkeys(self.names, raw))
        self._accept(
            1, replies, lambda r: wire.share_keys_from_proto(r, self.n), self.server.receive_shares
        )

    async def masked_inputs(self) -> None:
        """Round 2: every node in U2 gets its peers' shares and sends its masked input."""
        requests = {
            i: protocol_pb2.SecAggShareKeys(
                client_id=i, ciphertexts=wire.ciphertexts_to_proto(f.ciphertexts)
            ).SerializeToString()
            for i, f in self.server.forward().items()
        }
        replies = await self._round(2, requests)
        self._accept(2, replies, wire.masked_from_proto, self.server.receive_masked)

    async def consistency(self) -> tuple[tuple[int, ...], list[protocol_pb2.SecAggConsistency]]:
        """Round 3: every survivor signs the survivor set U3 (those reached form U4)."""
        survivors = self.server.survivors()
        raw = protocol_pb2.SecAggSurvivors(clients=survivors.clients).SerializeToString()
        signatures = []
        for i, reply in (await self._round(3, dict.fromkeys(survivors.clients, raw))).items():
            try:
                msg = protocol_pb2.SecAggConsistency.FromString(reply)
                if msg.client_id != i:
                    raise ValueError("wrong sender")
            except (DecodeError, ValueError) as exc:
                raise self._bad(i, 3) from exc
            signatures.append(msg)
        return survivors.clients, signatures

    async def unmask(
        self, u3: tuple[int, ...], signatures: list[protocol_pb2.SecAggConsistency]
    ) -> None:
        """Round 4: the signers, shown each other's signatures, reveal the unmasking shares."""
        raw = protocol_pb2.SecAggUnmaskRequest(
            clients=u3, signatures=signatures
        ).SerializeToString()
        signers = [s.client_id for s in signatures]
        if len(signers) < self.server.threshold:
            raise ProtocolError(
                f"only {len(signers)} node(s) signed the survivor set, need {self.server.threshold}"
            )
        replies = await self._round(4, dict.fromkeys(signers, raw))
        self._accept(
            4, replies, lambda r: wire.unmask_from_proto(r, self.n), self.server.receive_unmask
        )
