"""``shares``: Prio-style additive shares over ``Z_2^64``, summed by >= 2 aggregator nodes.

Node side (Query): append the checksum slot (:mod:`._integrity`), split the vector into
one additive share per aggregator (``n − 1`` of them as 16-byte AES-CTR seeds,
docs/parameters.md), and seal each share to its aggregator (:mod:`._envelope`).  Aggregator side
(step ``aggregate``): open one share from every participant, add them, return the sum,
once per job.  Client side: relay each aggregator the shares sealed to it, add the
aggregators' sums, check the checksum.

Who learns what: each aggregator sees one share per node and returns their sum, all
uniformly random on their own; the analyst sees sealed boxes and the aggregators' sums,
which add up to the total and reveal nothing else.  Trust: at least one aggregator honest
(it does not give its shares to another aggregator or the analyst).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError
from pydantic import Field

import datafed.modes._base as base
from datafed.errors import ProtocolError
from datafed.hazmat import SEED_BYTES, SeedShare, VectorShare, add_shares
from datafed.hazmat import split_additive as _split
from datafed.modes._envelope import check_roster, open_from_each, peers, seal
from datafed.modes._integrity import (
    check_ring,
    ring_from_bytes,
    ring_to_bytes,
    with_ring_checksum,
)
from datafed.modes._relay import collect_sealed
from datafed.modes._steps import Combined, NodeAnswer, StepSession, Totals
from datafed.pki.ca import Identity
from datafed.proto.v1 import protocol_pb2

__all__ = ["MAX_AGGREGATORS", "SharesMode"]

MAX_AGGREGATORS = 16
_ROUND_AGGREGATE = 1


@dataclass
class _AggregatorState:
    participants: dict[str, Identity]
    index: int
    length: int
    done: bool = field(default=False)


def _parse_params(env: base.NodeEnv, params: bytes) -> tuple[list[Identity], list[Identity]]:
    msg = base.read_params(protocol_pb2.SharesParams, params, "shares")
    aggregators = peers(env, msg.aggregator_certificates, "aggregator")
    if not 2 <= len(aggregators) <= MAX_AGGREGATORS:
        raise ValueError(
            f"shares needs between 2 and {MAX_AGGREGATORS} aggregators, got {len(aggregators)}"
        )
    participants = peers(env, msg.participant_certificates, "participant")
    check_roster(env, participants)
    names = {p.name for p in participants}
    if not {a.name for a in aggregators} <= names:
        raise ValueError("every aggregator must be a participant")
    return aggregators, participants


def _share_body(index: int, share: SeedShare | VectorShare) -> bytes:
    msg = protocol_pb2.ShareBody(index=index, length=share.length)
    if isinstance(share, SeedShare):
        msg.seed = share.seed
    else:
        msg.vector = ring_to_bytes(share.values)
    return msg.SerializeToString()


def _read_share(body: bytes, index: int, length: int) -> SeedShare | VectorShare:
    msg = protocol_pb2.ShareBody.FromString(body)
    if msg.index != index or msg.length != length:
        raise ValueError("a share is for another aggregator or of the wrong length")
    kind = msg.WhichOneof("share")
    if kind == "seed" and len(msg.seed) == SEED_BYTES:
        return SeedShare(bytes(msg.seed), length)
    if kind == "vector":
        return VectorShare(ring_from_bytes(bytes(msg.vector), length))
    raise ValueError("malformed share")


class _SharesOptions(base.ModeOptions):
    """``[modes.shares]``: how many nodes aggregate (the first ones of the roster)."""

    aggregators: int = Field(default=2, ge=2, le=MAX_AGGREGATORS)


class SharesMode(base.SteppedMode):
    """Additive shares to ``aggregators`` nodes; the analyst adds their sums."""

    name = "shares"
    summary = "additive shares summed by >= 2 aggregator nodes: the analyst learns the total"
    steps = ("aggregate",)
    Options = _SharesOptions

    def __init__(self, aggregators: int = 2) -> None:
        if not 2 <= aggregators <= MAX_AGGREGATORS:
            raise ValueError(
                f"shares needs between 2 and {MAX_AGGREGATORS} aggregators, got {aggregators}"
            )
        self.aggregators = aggregators

    # ------------------------------------------------------------------ node side
    @staticmethod
    def check_params(env: base.NodeEnv, params: bytes) -> None:
        """Distinct aggregators among the participants, who are exactly the roster."""
        _parse_params(env, params)

    @staticmethod
    def protect(env: base.NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Split ``values`` (and their checksum) into shares sealed to each aggregator."""
        aggregators, participants = _parse_params(env, params)
        base.check_int64(values)
        ring = with_ring_checksum(env.binding, values)
        mine = [i for i, a in enumerate(aggregators) if a.name == env.node]
        if mine:
            if env.stash is None:
                raise ValueError("this node cannot keep protocol state for an aggregator")
            env.stash.put(
                _AggregatorState({p.name: p for p in participants}, mine[0], int(ring.size))
            )
        shares = _split(ring, len(aggregators))
        out = protocol_pb2.SealedBundle()
        for j, (agg, share) in enumerate(zip(aggregators, shares, strict=True)):
            out.items.append(seal(env, SharesMode.name, agg, _share_body(j, share)))
        return out.SerializeToString()

    @classmethod
    def step(cls, env: base.NodeEnv, state: object, round_: int, payload: bytes) -> bytes:
        """Aggregate: open one share from every participant, return their sum (once)."""
        if not isinstance(state, _AggregatorState) or round_ != _ROUND_AGGREGATE:
            raise ValueError("this node is not an aggregator of this job")
        if state.done:
            raise ValueError("this job's shares were already aggregated")
        shares = open_from_each(
            env,
            cls.name,
            state.participants,
            payload,
            "share",
            lambda body: _read_share(body, state.index, state.length),
        )
        total = add_shares([shares[name] for name in sorted(shares)])
        state.done = True
        return protocol_pb2.ShareSum(vector=ring_to_bytes(total.values)).SerializeToString()

    # ---------------------------------------------------------------- client side
    async def params(self, ctx: base.ModeContext) -> bytes:
        """The first ``aggregators`` nodes aggregate; every node participates."""
        if len(ctx.nodes) < self.aggregators:
            raise ProtocolError(
                f"shares needs {self.aggregators} aggregator nodes, the federation has "
                f"{len(ctx.nodes)}"
            )
        return protocol_pb2.SharesParams(
            aggregator_certificates=ctx.certificates_of(ctx.nodes[: self.aggregators]),
            participant_certificates=ctx.certificates_of(ctx.nodes),
        ).SerializeToString()

    async def run_steps(
        self, session: StepSession, answers: Sequence[NodeAnswer], totals: Totals
    ) -> Combined:
        """Relay each aggregator its sealed shares, add the sums, check the checksum."""
        length = totals.length
        per_aggregator = collect_sealed(answers)
        replies = await asyncio.gather(
            *(
                session.step(agg, _ROUND_AGGREGATE, bundle.SerializeToString())
                for agg, bundle in per_aggregator.items()
            ),
            return_exceptions=True,  # let every aggregator finish (and log) before failing
        )
        total = np.zeros(length, dtype=np.uint64)
        for agg, raw in zip(per_aggregator, replies, strict=True):
            if isinstance(raw, BaseException):
                raise raw
            try:
                vec = ring_from_bytes(bytes(protocol_pb2.ShareSum.FromString(raw).vector), length)
            except (DecodeError, ValueError) as exc:
                raise ProtocolError(f"aggregator {agg!r} returned a malformed share sum") from exc
            np.add(total, vec, out=total)
        values = check_ring(session.binding, total)
        return Combined(values, tuple(a.node for a in answers))
