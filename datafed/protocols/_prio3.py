"""Prio3: an FLP turned into a VDAF (draft-irtf-cfrg-vdaf-20 §7.2).

Pure state machine, no I/O.  One client calls :meth:`Prio3.shard`; each of the
``SHARES`` aggregators calls :meth:`Prio3.verify_init` on its input share and
broadcasts the verifier share; anyone combines them with
:meth:`Prio3.verifier_shares_to_message` (which runs the FLP decision); each
aggregator ends with :meth:`Prio3.verify_next`, which releases its output share
only if the joint randomness it derived matches.  Output shares are summed into
aggregate shares and the collector calls :meth:`Prio3.unshard`.

Every failure on report data raises :class:`ReportRejected` and nothing else:
the report must be dropped from the batch (§5.2).  Bad arguments of the caller's
own (a verify key of the wrong size, an aggregator id out of range, an invalid
measurement at the client) raise :class:`ValueError`.  Prio3 has no aggregation
parameter, so the draft's ``agg_param`` arguments are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from datafed.hazmat import (
    FlpBBCGGI19,
    HazmatError,
    Valid,
    XofTurboShake128,
)
from datafed.protocols._prio3_aux import Prio3Aux
from datafed.protocols._prio3_codec import Prio3Codec
from datafed.protocols._prio3_types import (
    HelperShare,
    InputShare,
    LeaderShare,
    ReportRejected,
    Vec,
    VerifierShare,
    VerifyState,
)

M = TypeVar("M")
R = TypeVar("R")


class Prio3(Prio3Aux, Prio3Codec, Generic[M, R]):
    """Prio3 over a validity circuit (draft §7.2).

    Parameters
    ----------
    valid : Valid
        The validity circuit (it fixes the field and the measurement type).
    shares : int
        Number of aggregators, in ``[2, 256)``.
    vdaf_id : int
        The 32-bit algorithm identifier (§10), bound into every XOF call.
    proofs : int, optional
        Number of independent proofs, in ``[1, 256)`` (§7.1.2).
    """

    ROUNDS = 1
    NONCE_SIZE = 16
    xof = XofTurboShake128

    def __init__(self, valid: Valid[M, R], *, shares: int, vdaf_id: int, proofs: int = 1) -> None:
        if not 2 <= shares < 256:
            raise ValueError("Prio3 needs between 2 and 255 shares")
        if not 1 <= proofs < 256:
            raise ValueError("Prio3 needs between 1 and 255 proofs")
        if not 0 <= vdaf_id < 2**32:
            raise ValueError("VDAF id must fit in 32 bits")
        self.flp = FlpBBCGGI19(valid)
        if self.flp.JOINT_RAND_LEN > 0 and valid.field.ENCODED_SIZE < 16 and proofs < 3:
            # §9.7: joint randomness opens offline attacks on soundness; such circuits
            # MUST use Field128, or Field64 with at least three proofs.
            raise ValueError("a joint-randomness circuit over Field64 needs at least 3 proofs")
        self.field = valid.field
        self.ID = vdaf_id
        self.SHARES = shares
        self.PROOFS = proofs
        seed = self.xof.SEED_SIZE
        self.VERIFY_KEY_SIZE = seed
        self.uses_joint_rand = self.flp.JOINT_RAND_LEN > 0
        self.RAND_SIZE = seed * shares * (2 if self.uses_joint_rand else 1)
        self._dst: dict[tuple[int, bytes], bytes] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.ID:#x}, shares={self.SHARES}, proofs={self.PROOFS})"

    # -- sharding (§7.2.1) ---------------------------------------------------------
    def shard(
        self, ctx: bytes, measurement: M, nonce: bytes, rand: bytes
    ) -> tuple[list[bytes] | None, list[InputShare]]:
        """Split a measurement into a public share and ``SHARES`` input shares.

        Parameters
        ----------
        ctx : bytes
            Application context, bound into every derivation.
        measurement : M
            The measurement (its type depends on the circuit).
        nonce : bytes
            ``NONCE_SIZE`` bytes, unique per report.
        rand : bytes
            ``RAND_SIZE`` uniformly random bytes.

        Returns
        -------
        tuple
            ``(public_share, input_shares)``: the joint-randomness parts (or
            ``None``) and the Leader's share followed by each Helper's.
        """
        if len(nonce) != self.NONCE_SIZE:
            raise ValueError("incorrect nonce size")
        if len(rand) != self.RAND_SIZE:
            raise ValueError("incorrect size of random bytes argument")
        size = self.xof.SEED_SIZE
        seeds = [rand[i : i + size] for i in range(0, self.RAND_SIZE, size)]
        meas = self.flp.encode(measurement)
        helpers = self.SHARES - 1
        helper_blinds: list[bytes | None]
        leader_blind: bytes | None
        if self.uses_joint_rand:  # §7.2.1.2
            helper_seeds = seeds[0 : 2 * helpers : 2]
            helper_blinds = list(seeds[1 : 2 * helpers : 2])
            leader_blind, prove_seed = seeds[2 * helpers], seeds[2 * helpers + 1]
        else:  # §7.2.1.1
            helper_seeds, helper_blinds = seeds[:helpers], [None] * helpers
            leader_blind, prove_seed = None, seeds[helpers]
        p = self.field.MODULUS
        leader_meas = list(meas)
        parts: list[bytes] = []
        for j, seed in enumerate(helper_seeds, start=1):
            share = self.helper_meas_share(ctx, j, seed)
            leader_meas = [(x - y) % p for x, y in zip(leader_meas, share, strict=True)]
            if self.uses_joint_rand:
                blind = helper_blinds[j - 1]
                assert blind is not None
                parts.append(self.joint_rand_part(ctx, j, blind, share, nonce))
        joint_rands: Vec = []
        public_share: list[bytes] | None = None
        if self.uses_joint_rand:
            assert leader_blind is not None
            parts.insert(0, self.joint_rand_part(ctx, 0, leader_blind, leader_meas, nonce))
            joint_rands = self.joint_rands(ctx, self.joint_rand_seed(ctx, parts))
            public_share = parts
        prove_rands = self.prove_rands(ctx, prove_seed)
        pr_len, jr_len = self.flp.PROVE_RAND_LEN, self.flp.JOINT_RAND_LEN
        proofs: Vec = []
        for i in range(self.PROOFS):
            proofs += self.flp.prove(
                meas,
                prove_rands[i * pr_len : (i + 1) * pr_len],
                joint_rands[i * jr_len : (i + 1) * jr_len],
            )
        for j, seed in enumerate(helper_seeds, start=1):
            share = self.helper_proofs_share(ctx, j, seed)
            proofs = [(x - y) % p for x, y in zip(proofs, share, strict=True)]
        input_shares: list[InputShare] = [LeaderShare(leader_meas, proofs, leader_blind)]
        input_shares += [
            HelperShare(seed, blind)
            for seed, blind in zip(helper_seeds, helper_blinds, strict=True)
        ]
        return public_share, input_shares

    # -- verification (§7.2.2) -------------------------------------------------------
    def verify_init(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        nonce: bytes,
        public_share: Sequence[bytes] | None,
        input_share: InputShare,
    ) -> tuple[VerifyState, VerifierShare]:
        """Query this aggregator's shares: its verification state and verifier share.

        Parameters
        ----------
        verify_key : bytes
            The aggregators' shared secret ``VERIFY_KEY_SIZE``-byte key.
        ctx : bytes
            Application context.
        agg_id : int
            This aggregator's index in ``[0, SHARES)`` (0 is the Leader).
        nonce : bytes
            The report's nonce.
        public_share : sequence of bytes or None
            The report's joint-randomness parts.
        input_share : InputShare
            This aggregator's input share.

        Returns
        -------
        tuple
            ``(VerifyState, VerifierShare)``.

        Raises
        ------
        ReportRejected
            If the report's data is malformed (detail-free).
        """
        if len(verify_key) != self.VERIFY_KEY_SIZE:
            raise ValueError("incorrect verify key size")
        if not 0 <= agg_id < self.SHARES:
            raise ValueError("aggregator id out of range")
        try:
            return self._verify_init(verify_key, ctx, agg_id, nonce, public_share, input_share)
        except (ValueError, HazmatError, TypeError) as exc:
            raise ReportRejected from exc

    def _verify_init(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        nonce: bytes,
        public_share: Sequence[bytes] | None,
        input_share: InputShare,
    ) -> tuple[VerifyState, VerifierShare]:
        size = self.xof.SEED_SIZE
        if len(nonce) != self.NONCE_SIZE:
            raise ValueError
        meas_share, proofs_share, blind = self.expand_input_share(ctx, agg_id, input_share)
        out_share = self.flp.truncate(meas_share)
        joint_rands: Vec = []
        corrected_seed = part = None
        if self.uses_joint_rand:
            if blind is None or public_share is None or len(public_share) != self.SHARES:
                raise ValueError
            if len(blind) != size or any(len(x) != size for x in public_share):
                raise ValueError
            part = self.joint_rand_part(ctx, agg_id, blind, meas_share, nonce)
            parts = list(public_share)
            parts[agg_id] = part
            corrected_seed = self.joint_rand_seed(ctx, parts)
            joint_rands = self.joint_rands(ctx, corrected_seed)
        elif blind is not None or public_share is not None:
            raise ValueError
        query_rands = self.query_rands(verify_key, ctx, nonce)
        pl, ql, jl = self.flp.PROOF_LEN, self.flp.QUERY_RAND_LEN, self.flp.JOINT_RAND_LEN
        verifiers: Vec = []
        for i in range(self.PROOFS):
            verifiers += self.flp.query(
                meas_share,
                proofs_share[i * pl : (i + 1) * pl],
                query_rands[i * ql : (i + 1) * ql],
                joint_rands[i * jl : (i + 1) * jl],
                self.SHARES,
            )
        return VerifyState(out_share, corrected_seed), VerifierShare(verifiers, part)

    def verifier_shares_to_message(
        self, ctx: bytes, verifier_shares: Sequence[VerifierShare]
    ) -> bytes | None:
        """Sum the verifier shares, decide each proof, derive the joint-randomness seed.

        Parameters
        ----------
        ctx : bytes
            Application context.
        verifier_shares : sequence of VerifierShare
            One per aggregator, in aggregator order.

        Returns
        -------
        bytes or None
            The verifier message: the joint-randomness seed (``None`` without
            joint randomness).

        Raises
        ------
        ReportRejected
            If a proof is rejected or the shares are malformed (detail-free).
        """
        try:
            return self._verifier_shares_to_message(ctx, verifier_shares)
        except (ValueError, HazmatError, TypeError) as exc:
            raise ReportRejected from exc

    def _verifier_shares_to_message(
        self, ctx: bytes, verifier_shares: Sequence[VerifierShare]
    ) -> bytes | None:
        if len(verifier_shares) != self.SHARES:
            raise ValueError
        p, vl = self.field.MODULUS, self.flp.VERIFIER_LEN
        total = vl * self.PROOFS
        verifiers = [0] * total
        parts = []
        for share in verifier_shares:
            if len(share.verifiers_share) != total:
                raise ValueError
            verifiers = [x + y for x, y in zip(verifiers, share.verifiers_share, strict=True)]
            if self.uses_joint_rand:
                if share.joint_rand_part is None:
                    raise ValueError
                parts.append(share.joint_rand_part)
        verifiers = [x % p for x in verifiers]
        for i in range(self.PROOFS):
            if not self.flp.decide(verifiers[i * vl : (i + 1) * vl]):
                raise ValueError
        return self.joint_rand_seed(ctx, parts) if self.uses_joint_rand else None

    def verify_next(self, ctx: bytes, state: VerifyState, message: bytes | None) -> Vec:
        """Release the output share if the joint randomness checks out (§7.2.2).

        Parameters
        ----------
        ctx : bytes
            Application context (unused by Prio3's last step).
        state : VerifyState
            From :meth:`verify_init`.
        message : bytes or None
            The verifier message.

        Returns
        -------
        list of int
            The output share (``OUTPUT_LEN`` elements).

        Raises
        ------
        ReportRejected
            If the message differs from the seed this aggregator derived.
        """
        if message != state.corrected_joint_rand_seed:
            raise ReportRejected
        return list(state.out_share)

    # -- aggregation and unsharding (§7.2.4, §7.2.5) ---------------------------------
    def agg_init(self) -> Vec:
        """The zero aggregate share."""
        return self.field.zeros(self.flp.OUTPUT_LEN)

    def agg_update(self, agg_share: Vec, out_share: Vec) -> Vec:
        """``agg_share + out_share``."""
        return self.field.vec_add(agg_share, out_share)

    def aggregate(self, out_shares: Sequence[Vec]) -> Vec:
        """Sum many output shares at once (one reduction per element)."""
        total = [0] * self.flp.OUTPUT_LEN
        for out in out_shares:
            if len(out) != len(total):
                raise ValueError("mismatched vector sizes")
            total = [x + y for x, y in zip(total, out, strict=True)]
        return [x % self.field.MODULUS for x in total]

    def merge(self, agg_shares: Sequence[Vec]) -> Vec:
        """Sum aggregate shares."""
        return self.aggregate(agg_shares)

    def unshard(self, agg_shares: Sequence[Vec], num_measurements: int) -> R:
        """The aggregate result from every aggregator's aggregate share (§7.2.5)."""
        if len(agg_shares) != self.SHARES:
            raise ValueError(f"unshard needs {self.SHARES} aggregate shares")
        result: R = self.flp.decode(self.merge(agg_shares), num_measurements)
        return result
