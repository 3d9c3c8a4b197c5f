"""Messages, states and the one error of Prio3 (draft-irtf-cfrg-vdaf-20 §7.2).

The shapes follow the draft's Prio3 types (§7.2, table "Parameters for Prio3"):
an input share is the Leader's explicit measurement and proof shares or a
Helper's XOF seed, each with a blind when the circuit uses joint randomness;
the verifier share carries the query output and the joint-randomness part.
Wire encodings are in :mod:`._prio3_codec` (§7.2.7).
"""

from __future__ import annotations

from dataclasses import dataclass

from datafed.protocols.errors import InvalidMessage

Vec = list[int]


class ReportRejected(InvalidMessage):
    """A report failed verification or decoding (draft §5.2: remove it from the batch).

    One error for every cause (malformed share, bad proof, joint-randomness
    mismatch): its text names none of them, so that no party can use rejections
    as an oracle on which check a crafted report tripped.
    """


@dataclass(frozen=True, eq=False)
class LeaderShare:
    """Aggregator 0's input share: explicit measurement share and proof share(s).

    Attributes
    ----------
    meas_share : list of int
        ``MEAS_LEN`` field elements.
    proofs_share : list of int
        ``PROOF_LEN * PROOFS`` field elements.
    blind : bytes or None
        The joint-randomness blind (``None`` when the circuit needs none).
    """

    meas_share: Vec
    proofs_share: Vec
    blind: bytes | None

    def __repr__(self) -> str:
        return f"LeaderShare(<{len(self.meas_share)} + {len(self.proofs_share)} elements redacted>)"


@dataclass(frozen=True)
class HelperShare:
    """A Helper's input share: the XOF seed its shares expand from, and its blind.

    Attributes
    ----------
    seed : bytes
        ``SEED_SIZE`` bytes.
    blind : bytes or None
        The joint-randomness blind (``None`` when the circuit needs none).
    """

    seed: bytes
    blind: bytes | None

    def __repr__(self) -> str:
        return "HelperShare(seed=<redacted>, blind=<redacted>)"


InputShare = LeaderShare | HelperShare
"""One aggregator's input share."""


@dataclass(frozen=True, eq=False)
class VerifyState:
    """What an aggregator keeps between ``verify_init`` and ``verify_next``.

    Attributes
    ----------
    out_share : list of int
        The output share, released only if verification succeeds.
    corrected_joint_rand_seed : bytes or None
        The joint-randomness seed this aggregator derived (with its own part).
    """

    out_share: Vec
    corrected_joint_rand_seed: bytes | None

    def __repr__(self) -> str:
        return f"VerifyState(<{len(self.out_share)} elements redacted>)"


@dataclass(frozen=True, eq=False)
class VerifierShare:
    """One aggregator's broadcast in the verification round.

    Attributes
    ----------
    verifiers_share : list of int
        ``VERIFIER_LEN * PROOFS`` field elements: shares of each verifier.
    joint_rand_part : bytes or None
        This aggregator's joint-randomness part (``None`` without joint randomness).
    """

    verifiers_share: Vec
    joint_rand_part: bytes | None
