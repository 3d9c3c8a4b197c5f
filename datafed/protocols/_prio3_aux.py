"""Prio3's auxiliary functions (draft-irtf-cfrg-vdaf-20 §7.2.6); mixed into :class:`Prio3`.

Every pseudorandom vector of Prio3 comes from XofTurboShake128 under a domain
separation tag ``format_dst(0, ID, usage) || ctx`` (§5, §6.2.3) and a binder that
names the aggregator, the number of proofs and, for the query randomness, the
nonce: shares, proofs and tests of different reports, aggregators, VDAFs and
applications never share a stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datafed.hazmat import FlpBBCGGI19, NttField, Xof, format_dst
from datafed.protocols._prio3_types import HelperShare, InputShare, LeaderShare, Vec

# §7.2, table "Constants used by Prio3".
USAGE_MEAS_SHARE = 1
USAGE_PROOF_SHARE = 2
USAGE_JOINT_RANDOMNESS = 3
USAGE_PROVE_RANDOMNESS = 4
USAGE_QUERY_RANDOMNESS = 5
USAGE_JOINT_RAND_SEED = 6
USAGE_JOINT_RAND_PART = 7


class Prio3Aux:
    """XOF-derived shares and randomness of Prio3."""

    ID: int
    PROOFS: int
    field: NttField
    flp: FlpBBCGGI19[Any, Any]
    xof: type[Xof]
    _dst: dict[tuple[int, bytes], bytes]

    def domain_separation_tag(self, usage: int, ctx: bytes) -> bytes:
        """``format_dst(0, ID, usage) || ctx`` (§5)."""
        key = (usage, ctx)
        tag = self._dst.get(key)
        if tag is None:
            tag = format_dst(0, self.ID, usage) + ctx
            if len(self._dst) < 64:  # a few contexts per instance; never grows unbounded
                self._dst[key] = tag
        return tag

    # -- auxiliary functions (§7.2.6) ---------------------------------------------------
    def helper_meas_share(self, ctx: bytes, agg_id: int, seed: bytes) -> Vec:
        """A Helper's measurement share, expanded from its seed."""
        dst = self.domain_separation_tag(USAGE_MEAS_SHARE, ctx)
        return self.xof.expand_into_vec(self.field, seed, dst, bytes([agg_id]), self.flp.MEAS_LEN)

    def helper_proofs_share(self, ctx: bytes, agg_id: int, seed: bytes) -> Vec:
        """A Helper's proof share(s), expanded from its seed."""
        dst = self.domain_separation_tag(USAGE_PROOF_SHARE, ctx)
        return self.xof.expand_into_vec(
            self.field, seed, dst, bytes([self.PROOFS, agg_id]), self.flp.PROOF_LEN * self.PROOFS
        )

    def expand_input_share(
        self, ctx: bytes, agg_id: int, input_share: InputShare
    ) -> tuple[Vec, Vec, bytes | None]:
        """``(meas_share, proofs_share, blind)`` of an input share."""
        if agg_id > 0:
            if not isinstance(input_share, HelperShare):
                raise ValueError
            if len(input_share.seed) != self.xof.SEED_SIZE:
                raise ValueError
            return (
                self.helper_meas_share(ctx, agg_id, input_share.seed),
                self.helper_proofs_share(ctx, agg_id, input_share.seed),
                input_share.blind,
            )
        if not isinstance(input_share, LeaderShare):
            raise ValueError
        p = self.field.MODULUS
        meas, proofs = input_share.meas_share, input_share.proofs_share
        if len(meas) != self.flp.MEAS_LEN or len(proofs) != self.flp.PROOF_LEN * self.PROOFS:
            raise ValueError
        if any(not 0 <= x < p for x in meas) or any(not 0 <= x < p for x in proofs):
            raise ValueError
        return list(meas), list(proofs), input_share.blind

    def prove_rands(self, ctx: bytes, prove_seed: bytes) -> Vec:
        """The prover randomness of every proof."""
        dst = self.domain_separation_tag(USAGE_PROVE_RANDOMNESS, ctx)
        length = self.flp.PROVE_RAND_LEN * self.PROOFS
        return self.xof.expand_into_vec(self.field, prove_seed, dst, bytes([self.PROOFS]), length)

    def query_rands(self, verify_key: bytes, ctx: bytes, nonce: bytes) -> Vec:
        """The query randomness of every proof (secret to the aggregators)."""
        dst = self.domain_separation_tag(USAGE_QUERY_RANDOMNESS, ctx)
        length = self.flp.QUERY_RAND_LEN * self.PROOFS
        binder = bytes([self.PROOFS]) + nonce
        return self.xof.expand_into_vec(self.field, verify_key, dst, binder, length)

    def joint_rand_part(
        self, ctx: bytes, agg_id: int, blind: bytes, meas_share: Vec, nonce: bytes
    ) -> bytes:
        """One aggregator's joint-randomness part, bound to its measurement share."""
        dst = self.domain_separation_tag(USAGE_JOINT_RAND_PART, ctx)
        binder = bytes([agg_id]) + nonce + self.field.encode_vec(meas_share)
        return self.xof.derive_seed(blind, dst, binder)

    def joint_rand_seed(self, ctx: bytes, parts: Sequence[bytes]) -> bytes:
        """The joint-randomness seed from all parts."""
        dst = self.domain_separation_tag(USAGE_JOINT_RAND_SEED, ctx)
        return self.xof.derive_seed(bytes(self.xof.SEED_SIZE), dst, b"".join(parts))

    def joint_rands(self, ctx: bytes, seed: bytes) -> Vec:
        """The joint randomness of every proof, from its seed."""
        dst = self.domain_separation_tag(USAGE_JOINT_RANDOMNESS, ctx)
        length = self.flp.JOINT_RAND_LEN * self.PROOFS
        return self.xof.expand_into_vec(self.field, seed, dst, bytes([self.PROOFS]), length)
