"""``ckks``: vectors encrypted under the analyst's CKKS key, added by one aggregator node.

Node side (Query): scale the fixed-point values back to reals per component (sums by
``2^-bits``, counts as they are), append the checksum slot (:mod:`._integrity`), encrypt
under the analyst's *public* TenSEAL context from the parameters, and seal the ciphertext
to the aggregator (:mod:`._envelope`).  Aggregator side (step ``aggregate``): open one
ciphertext from every participant, add them, return only the sum, once per job.  Client
side: decrypt the sum, check the checksum, round back to fixed point, report the error
bound (:class:`~datafed.hazmat.HeParams`: fresh-encryption and encoding errors, summed).

The context travels once: the client names it by its SHA-256 in the params and sends
it beside them (``QueryRequestBody.public_context``) on its first query to each node; the
node keeps it per requester (:mod:`._ckks_contexts`) and a node that does not hold it
refuses before admission (FAILED_PRECONDITION), whereupon the client resends with it.
Params that carry the context inline (older clients) work as before.

Who learns what: the aggregator sees ciphertexts under a key it does not hold; the
analyst sees sealed boxes and one sum ciphertext.  Trust: the aggregator does not forward
single ciphertexts to the analyst (it refuses to add fewer than all participants, and
adds once per job).  A node refuses parameters below 128-bit security (HE standard).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from datafed.errors import ProtocolError
from datafed.hazmat import EncryptedVector, HeContext, HeParams, HePublicContext
from datafed.modes._base import ModeContext, ModeOptions, NodeEnv, SteppedMode, read_params
from datafed.modes._ckks_contexts import CONTEXT_CACHE
from datafed.modes._envelope import check_roster, open_from_each, peers, seal
from datafed.modes._integrity import check_real, real_weights
from datafed.modes._relay import collect_sealed
from datafed.modes._steps import Combined, NodeAnswer, StepSession, Totals
from datafed.pki.ca import Identity
from datafed.proto.v1 import protocol_pb2
from datafed.query.components import Component

__all__ = ["MAX_COEFF_MODULUS_BITS", "CkksMode", "hold_context"]

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
    #: Held while the context is used (shared with the node's other jobs when cached).
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_context(raw: bytes, parties: int = 2) -> HePublicContext:
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
    _check_additions(ctx, parties)
    return ctx


def _check_additions(ctx: HePublicContext, parties: int) -> None:
    if ctx.params.max_additions < parties:
        raise ValueError(
            f"the context allows {ctx.params.max_additions} additions, {parties} needed"
        )


def _parse_params(
    env: NodeEnv, params: bytes
) -> tuple[protocol_pb2.CkksParams, Identity, list[Identity]]:
    msg = read_params(protocol_pb2.CkksParams, params, "CKKS")
    if msg.public_context and msg.public_context_digest:
        raise ValueError("the public context travels inline or by its digest, not both")
    if not msg.public_context and len(msg.public_context_digest) != 32:
        raise ValueError("no public context: name it by its SHA-256 digest (32 bytes)")
    (aggregator,) = peers(env, [msg.aggregator_certificate], "aggregator")
    participants = peers(env, msg.participant_certificates, "participant")
    if len(participants) < 2:  # else the aggregator's "sum" would be one node's ciphertext
        raise ValueError("ckks needs at least 2 participants")
    check_roster(env, participants)
    names = {p.name for p in participants}
    if aggregator.name not in names:
        raise ValueError("the aggregator must be a participant")
    return msg, aggregator, participants


def hold_context(requester: str, job_id: str, params: bytes, body: bytes, ttl_s: float) -> None:
    """Before admission: keep the context the params name for this job (the node's cache).

    Params with an inline context need nothing here (``body`` must then be empty).

    Raises
    ------
    ContextNeeded
        The params name a context by digest that this node holds for no such requester,
        and the request did not carry it: the client resends with it.
    ValueError
        Malformed params, or a body that does not match the named digest and length.
    """
    msg = read_params(protocol_pb2.CkksParams, params, "CKKS")
    if msg.public_context or not msg.public_context_digest:
        if body:
            raise ValueError("a public context beside params that carry one inline")
        return
    digest, length = bytes(msg.public_context_digest), msg.public_context_bytes
    until = CONTEXT_CACHE.clock() + ttl_s
    CONTEXT_CACHE.hold(requester, job_id, digest, length, body, until)


def _encrypt(env: NodeEnv, values: Sequence[int], state: _AggregatorState) -> list[bytes]:
    """The values as reals under the state's context (its length set); caller holds the lock."""
    x = _reals(env, values, state.context.params.value_bound)
    state.length = x.size
    chunks: list[bytes] = state.context.encrypt(x).to_chunks()
    return chunks


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
        self._public = self._digest = b""
        self._lock = threading.Lock()
        #: Nodes that answered a query of this mode: they hold the context (by digest).
        self._holders: set[str] = set()
        #: How often each node asked for the context after a query without it.
        self._asked: dict[str, int] = {}

    # ------------------------------------------------------------------ node side
    @staticmethod
    def check_params(env: NodeEnv, params: bytes) -> None:
        """An aggregator among at least two participants, who are exactly the roster."""
        _parse_params(env, params)

    @staticmethod
    def protect(env: NodeEnv, params: bytes, values: Sequence[int]) -> bytes:
        """Encrypt the values as reals and seal the ciphertext to the aggregator."""
        msg, aggregator, participants = _parse_params(env, params)
        if msg.public_context:  # inline: loaded for this job alone
            state = _AggregatorState(
                _load_context(bytes(msg.public_context), len(participants)), {}, 0
            )
            chunks = _encrypt(env, values, state)
        else:  # named by digest: the node's cached copy (held for this job since its check)
            digest = bytes(msg.public_context_digest)
            with CONTEXT_CACHE.use(env.requester, env.job_id, digest, _load_context) as e:
                state = _AggregatorState(e.context, {}, 0, lock=e.lock)
                _check_additions(e.context, len(participants))
                chunks = _encrypt(env, values, state)  # e.lock held: one thread at a time
        if aggregator.name == env.node:
            if env.stash is None:
                raise ValueError("this node cannot keep protocol state for an aggregator")
            state.participants = {p.name: p for p in participants}
            env.stash.put(state)
        body = protocol_pb2.CkksVector(length=state.length, chunks=chunks)
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
        with state.lock:
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
            with state.lock:
                return state.context.vector_from_chunks(list(msg.chunks), length=state.length)
        except Exception as exc:  # TenSEAL: out-of-range or malformed ciphertext data
            raise ValueError("malformed or out-of-range ciphertext") from exc

    # ---------------------------------------------------------------- client side
    def _generate_once(self) -> HeContext:
        # Concurrent queries share this mode: the context is made exactly once, so no
        # query decrypts with a key other than the one its params named.
        with self._lock:
            if self._context is None:
                context = HeContext.generate(HeParams.for_sums(self.value_bound))
                self._public = context.public_bytes()
                self._digest = hashlib.sha256(self._public).digest()
                self._context = context
            return self._context

    async def _keys(self) -> HeContext:
        if self._context is not None:
            return self._context
        return await asyncio.to_thread(self._generate_once)

    async def params(self, ctx: ModeContext) -> bytes:
        """The public context's digest; the first node aggregates; every node participates."""
        await self._keys()
        return protocol_pb2.CkksParams(
            public_context_digest=self._digest,
            public_context_bytes=len(self._public),
            aggregator_certificate=ctx.certificates[ctx.nodes[0]],
            participant_certificates=ctx.certificates_of(ctx.nodes),
        ).SerializeToString()

    def attachment(self, node: str, *, needed: bool = False) -> bytes:
        """The public context for ``node`` unless it answered before (and did not ask)."""
        if needed:
            self._holders.discard(node)
            self._asked[node] = self._asked.get(node, 0) + 1
        return b"" if node in self._holders else self._public

    def answered(self, node: str) -> None:
        """``node`` answered a query: it holds the context now.

        Unless it asked for it twice already: its cache has no room for the context, so
        it gets it with every query rather than a refusal and a resend each time.
        """
        if self._asked.get(node, 0) < 2:
            self._holders.add(node)

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
