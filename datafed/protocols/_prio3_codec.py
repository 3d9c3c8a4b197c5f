"""Wire encodings of Prio3's messages (draft-irtf-cfrg-vdaf-20 §7.2.7).

Seeds are ``SEED_SIZE`` raw bytes, field elements ``ENCODED_SIZE`` little-endian
bytes; every structure has a fixed length given by the instance's parameters,
so decoding checks the exact length and that each element is below the modulus.
Any malformed input raises :class:`ReportRejected` (no detail).
"""

from __future__ import annotations

from collections.abc import Sequence

import datafed.protocols._prio3_types as shares
from datafed.hazmat import FlpBBCGGI19, HazmatError, NttField, Xof


class Prio3Codec:
    """Encoding and decoding of Prio3 messages; mixed into :class:`Prio3`."""

    field: NttField
    flp: FlpBBCGGI19  # type: ignore[type-arg]
    xof: type[Xof]
    SHARES: int
    PROOFS: int
    uses_joint_rand: bool

    def _vec(self, data: bytes, length: int) -> shares.Vec:
        if len(data) != length * self.field.ENCODED_SIZE:
            raise shares.ReportRejected
        try:
            return self.field.decode_vec(data)
        except HazmatError as exc:
            raise shares.ReportRejected from exc

    # -- public share (§7.2.7.1) ----------------------------------------------------
    def encode_public_share(self, public_share: Sequence[bytes] | None) -> bytes:
        """The joint-randomness parts, concatenated (empty without joint randomness)."""
        return b"".join(public_share) if public_share is not None else b""

    def decode_public_share(self, data: bytes) -> list[bytes] | None:
        """Inverse of :meth:`encode_public_share`."""
        size = self.xof.SEED_SIZE
        if not self.uses_joint_rand:
            if data:
                raise shares.ReportRejected
            return None
        if len(data) != size * self.SHARES:
            raise shares.ReportRejected
        return [data[i : i + size] for i in range(0, len(data), size)]

    # -- input shares (§7.2.7.2) ---------------------------------------------------
    def encode_input_share(self, share: shares.InputShare) -> bytes:
        """Leader: measurement and proof shares (+ blind); Helper: seed (+ blind)."""
        blind = share.blind or b""
        if isinstance(share, shares.LeaderShare):
            return self.field.encode_vec(share.meas_share + share.proofs_share) + blind
        return share.seed + blind

    def decode_input_share(self, agg_id: int, data: bytes) -> shares.InputShare:
        """Inverse of :meth:`encode_input_share` for aggregator ``agg_id``."""
        size = self.xof.SEED_SIZE
        blind_len = size if self.uses_joint_rand else 0
        body, blind_bytes = data[: len(data) - blind_len], data[len(data) - blind_len :]
        blind = blind_bytes if self.uses_joint_rand else None
        if agg_id == 0:
            meas_len = self.flp.MEAS_LEN
            both = self._vec(body, meas_len + self.flp.PROOF_LEN * self.PROOFS)
            return shares.LeaderShare(both[:meas_len], both[meas_len:], blind)
        if len(data) != size + blind_len:
            raise shares.ReportRejected
        return shares.HelperShare(body, blind)

    # -- verification messages (§7.2.7.3, §7.2.7.4) -------------------------------------
    def encode_verifier_share(self, share: shares.VerifierShare) -> bytes:
        """The verifier shares (+ the joint-randomness part)."""
        return self.field.encode_vec(share.verifiers_share) + (share.joint_rand_part or b"")

    def decode_verifier_share(self, data: bytes) -> shares.VerifierShare:
        """Inverse of :meth:`encode_verifier_share`."""
        part_len = self.xof.SEED_SIZE if self.uses_joint_rand else 0
        length = self.flp.VERIFIER_LEN * self.PROOFS
        if len(data) != length * self.field.ENCODED_SIZE + part_len:
            raise shares.ReportRejected
        split = len(data) - part_len
        part = data[split:] if self.uses_joint_rand else None
        return shares.VerifierShare(self._vec(data[:split], length), part)

    def encode_verifier_message(self, message: bytes | None) -> bytes:
        """The joint-randomness seed (empty without joint randomness)."""
        return message or b""

    def decode_verifier_message(self, data: bytes) -> bytes | None:
        """Inverse of :meth:`encode_verifier_message`."""
        if not self.uses_joint_rand:
            if data:
                raise shares.ReportRejected
            return None
        if len(data) != self.xof.SEED_SIZE:
            raise shares.ReportRejected
        return data

    # -- aggregation (§7.2.7.5) ---------------------------------------------------------
    def encode_agg_share(self, agg_share: shares.Vec) -> bytes:
        """``OUTPUT_LEN`` field elements (also the encoding of an output share)."""
        return self.field.encode_vec(agg_share)

    def decode_agg_share(self, data: bytes) -> shares.Vec:
        """Inverse of :meth:`encode_agg_share`."""
        return self._vec(data, self.flp.OUTPUT_LEN)
