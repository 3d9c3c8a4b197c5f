"""``ckks``: vectors encrypted under the analyst's CKKS key, added by one aggregator node.

Node side (Query): scale the fixed-point values back to reals per component (sums by
``2^-bits``, counts as they are), append the checksum slot (:mod:`._integrity`), encrypt
under the analyst's *public* TenSEAL context from the parameters, and seal the ciphertext
to the aggregator (:mod:`._envelope`).  Aggregator side (step ``aggregate``): open one
ciphertext from every participant, add them, return only the sum, once per job.  Client
side: decrypt the sum, check the checksum, round back to fixed point, report the error
bound (:class:`~datafed.hazmat.HeParams`: fresh-encryption and encoding errors, summed).

Who learns what: the aggregator sees ciphertexts under a key it does not hold; the
analyst sees sealed boxes and one sum ciphertext.  Trust: the aggregator does not forward
single ciphertexts to the analyst (it refuses to add fewer than all participants, and
adds once per job).  A node refuses parameters below 128-bit security (HE standard).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from datafed.errors import ProtocolError
from datafed.hazmat import EncryptedVector, HeContext, HeParams, HePublicContext
from datafed.modes._base import ModeContext, ModeOptions, NodeEnv, SteppedMode, read_params
from datafed.modes._envelope import check_roster, open_from_each, peers, seal
from datafed.modes._integrity import check_real, real_weights
from datafed.modes._relay import collect_sealed
from datafed.modes._steps import Combined, NodeAnswer, StepSession, Totals
from datafed.pki.ca import Identity
from datafed.proto.v1 import protocol_pb2
from datafed.query.components import Component

__all__ = ["MAX_COEFF_MODULUS_BITS", "CkksMode"]

#: Largest total coefficient modulus per ring dimension for 128-bit classical security
#: with ternary secrets: HE standard (homomorphicencryption.org, 2018), Table 1; the
#: same limits as SEAL's ``CoeffModulus::MaxBitCount``.
MAX_COEFF_MODULUS_BITS = {8192: 218, 16384: 438, 32768: 881}
#: Default magnitude bound of one value (real units); larger values are refused.
DEFAULT_VALUE_BOUND = float(2**30)
_ROUND_AGGREGATE = 1


@dataclass
class _AggregatorState:
    context: HePublicContext
    participants: dict[str, Identity]
    length: int
    done: bool = False


def _load_context(raw: bytes, parties: int) -> HePublicContext:
    """Load the analyst's public context; refuse anything below 128-bit security."""
    try:
        ctx = HePublicContext.from_bytes(raw)
    except Exception as exc:  # TenSEAL and json raise assorted types on bad bytes
        raise ValueError("malformed CKKS public context") from exc
    seal: Any = ctx._context.seal_context().data.key_context_data()
    degree = int(seal.parms().poly_modulus_degree())
    bits = int(seal.total_coeff_modulus_bit_count())
    p = ctx.params
    if p.scheme != "ckks" or str(seal.parms().scheme()) != "SCHEME_TYPE.CKKS":
        raise ValueError("the public context is not a CKKS context")
    if degree not in MAX_COEFF_MODULUS_BITS or bits > MAX_COEFF_MODULUS_BITS[degree]:
        raise ValueError(
            f"CKKS parameters below 128-bit security (N={degree}, log q={bits}; HE standard)"
        )
    if (degree, bits) != (p.poly_modulus_degree, sum(p.coeff_mod_bit_sizes)):
        raise ValueError("the public context does not match its declared parameters")
    if p.max_additions < parties:
        raise ValueError(f"the context allows {p.max_additions} additions, {parties} needed")
    return ctx


def _parse_params(
    env: NodeEnv, params: bytes
) -> tuple[protocol_pb2.CkksParams, Identity, list[Identity]]:
    msg = read_params(protocol_pb2.CkksParams, params, "CKKS")
    (aggregator,) = peers(env, [msg.aggregator_certificate], "aggregator")
    participants = peers(env, msg.participant_certificates, "participant")
    if len(participants) < 2:  # else the aggregator's "sum" would be one node's ciphertext
        raise ValueError("ckks needs at least 2 participants")
    check_roster(env, participants)
    names = {p.name for p in participants}
    if aggregator.name not in names:
        raise ValueError("the aggregator must be a participant")
    return msg, aggregator, participants


def _reals(env: NodeEnv, values: Sequence[int], bound: float) -> npt.NDArray[np.float64]:
    """The values as reals saturated at ``±bound`` (the analyst's), and their checksum.

    A value beyond the bound is carried as the bound, never refused: after admission a
    refusal would tell the analyst that this node's aggregate exceeds a bound it chose
    (``docs/invisibility.md``). The checksum's weights keep it within the bound too.
    """
    comps = env.components
    if not comps or len(values) % len(comps):
        raise ValueError("ckks needs the component of every value")
    sum_scale = 2.0**-env.fixed_point_bits
    factors = np.tile([sum_scale if c.scaled else 1.0 for c in comps], len(values) // len(comps))
    x = np.clip(np.asarray([float(v) for v in values], dtype=np.float64) * factors, -bound, bound)
    return np.append(x, np.dot(real_weights(env.binding, x.size), x))


class _CkksOptions(ModeOptions):
    """``[modes.ckks]``: the largest magnitude of one value (real units)."""

    value_bound: float = Field(default=DEFAULT_VALUE_BOUND, gt=0, lt=2.0**52)


class CkksMode(SteppedMode):
    """CKKS vectors under the analyst's key; one aggregator node adds them."""

    name = "ckks"
    summary = "CKKS vectors added by one aggregator node: the analyst learns the total (approx.)"
    steps = ("aggregate",)
    Options = _CkksOptions

    def __init__(self, value_bound: float = DEFAULT_VALUE_BOUND) -> None:
        if not 0 < value_bound < 2.0**52:
            raise ValueError(f"value_bound must be in (0, 2^52), got {value_bound}")
        self.value_bound = value_bound
        self._context: HeContext | None = None

    # ------------------------------------------------------------------ node side
    @staticmethod
    def check_params(env: NodeEnv, params: bytes) -> None:
        """An aggregator among at least two participants, who are exactly the roster."""
        _parse_params(env, params)

    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Encrypt the values as reals and seal the ciphertext to the aggregator."""
        msg, aggregator, participants = _parse_params(env, params)
        context = _load_context(bytes(msg.public_context), len(participants))
        x = _reals(env, values, context.params.value_bound)
        encrypted = context.encrypt(x)
        if aggregator.name == env.node:
            if env.stash is None:
                raise ValueError("this node cannot keep protocol state for an aggregator")
            env.stash.put(_AggregatorState(context, {p.name: p for p in participants}, x.size))
        body = protocol_pb2.CkksVector(length=x.size, chunks=encrypted.to_chunks())
        item = seal(env, CkksMode.name, aggregator, body.SerializeToString())
        return protocol_pb2.SealedBundle(items=[item]).SerializeToString()

    @classmethod
    def step(cls, env: NodeEnv, state: object, round_: int, payload: bytes) -> bytes:
        """Aggregate: open one ciphertext from every participant, return their sum (once)."""
        if not isinstance(state, _AggregatorState) or round_ != _ROUND_AGGREGATE:
            raise ValueError("this node is not the aggregator of this job")
        if state.done:
            raise ValueError("this job's ciphertexts were already aggregated")
        vectors = open_from_each(
            env, cls.name, state.participants, payload, "ciphertext", lambda b: cls._load(state, b)
        )
        first, *rest = vectors.values()
        try:
            for vec in rest:
                first = first + vec
            chunks = first.to_chunks()
        except Exception as exc:  # TenSEAL: ciphertexts that do not add (scale, level)
            raise ValueError("malformed or out-of-range ciphertext") from exc
        state.done = True
        return protocol_pb2.CkksVector(length=state.length, chunks=chunks).SerializeToString()

    @staticmethod
    def _load(state: _AggregatorState, body: bytes) -> EncryptedVector:
        try:
            msg = protocol_pb2.CkksVector.FromString(body)
            if msg.length != state.length:
                raise ValueError("wrong length")
            return state.context.vector_from_chunks(list(msg.chunks), length=state.length)
        except Exception as exc:  # TenSEAL: out-of-range or malformed ciphertext data
            raise ValueError("malformed or out-of-range ciphertext") from exc

    # ---------------------------------------------------------------- client side
    async def _keys(self) -> HeContext:
        if self._context is None:
            params = HeParams(value_bound=self.value_bound)
            self._context = await asyncio.to_thread(HeContext.generate, params)
        return self._context

    async def params(self, ctx: ModeContext) -> bytes:
        """The public context; the first node aggregates; every node participates."""
        context = await self._keys()
        return protocol_pb2.CkksParams(
            public_context=context.public_bytes(),
            aggregator_certificate=ctx.certificates[ctx.nodes[0]],
            participant_certificates=ctx.certificates_of(ctx.nodes),
        ).SerializeToString()

    async def run_steps(
        self, session: StepSession, answers: Sequence[NodeAnswer], totals: Totals
    ) -> Combined:
        """Have the aggregator add the ciphertexts; decrypt, check and round the sum."""
        context = await self._keys()
        length = totals.length
        ((aggregator, bundle),) = _one_aggregator(answers).items()
        raw = await session.step(aggregator, _ROUND_AGGREGATE, bundle.SerializeToString())
        try:
            msg = protocol_pb2.CkksVector.FromString(raw)
            if msg.length != length:
                raise ValueError("wrong length")
            total = context.vector_from_chunks(
                list(msg.chunks), length=length, additions=len(answers)
            )
            result = await asyncio.to_thread(context.decrypt, total)
        except Exception as exc:  # TenSEAL raises assorted types on bad ciphertexts
            raise ProtocolError(f"aggregator {aggregator!r} returned a malformed sum") from exc
        check_real(session.binding, np.asarray(result.values, dtype=np.float64), result.error_bound)
        values, bound = _to_fixed(result.values[:-1], result.error_bound, totals.comps, totals.bits)
        return Combined(values, tuple(a.node for a in answers), bound)


def _one_aggregator(answers: Sequence[NodeAnswer]) -> dict[str, protocol_pb2.SealedBundle]:
    out = collect_sealed(answers)
    if len(out) != 1:
        raise ProtocolError("ckks nodes must seal to exactly one aggregator")
    return out


def _to_fixed(
    values: npt.NDArray[Any], error: float, comps: Sequence[Component], bits: int
) -> tuple[list[int], float]:
    """Round to fixed point; the bound covers CKKS error plus rounding (0 if exact)."""
    out: list[int] = []
    bound = 0.0
    for i, y in enumerate(values):
        comp = comps[i % len(comps)]
        unit = 2.0**-bits if comp.scaled else 1.0
        out.append(round(float(y) / unit))
        # The true total is a multiple of ``unit``: rounding is exact while error < unit/2.
        bound = max(bound, 0.0 if error < unit / 2 else error + unit / 2)
    return out, bound
