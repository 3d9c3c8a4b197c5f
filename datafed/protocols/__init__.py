"""Multi-party protocol state machines: pure, no I/O.

* secure aggregation with dropouts (Bonawitz et al., CCS 2017):
  :class:`SecAggClient`, :class:`SecAggServer` and their round messages;
* private intersection-sum (Google's Private Join and Compute):
  :class:`PsiParty1`, :class:`PsiParty2` and their round messages;
* the differential-privacy budget: :class:`PrivacyAccountant`;
* Prio3 (draft-irtf-cfrg-vdaf-20): :class:`Prio3` and its variants
  :class:`Prio3Count`, :class:`Prio3Sum`, :class:`Prio3SumVec`,
  :class:`Prio3Histogram`, :class:`Prio3MultihotCountVec` (``docs/prio3.md``).
"""

from datafed.protocols._budget import Charge, PrivacyAccountant
from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_types import (
    HelperShare,
    InputShare,
    LeaderShare,
    ReportRejected,
    VerifierShare,
    VerifyState,
)
from datafed.protocols._prio3_variants import (
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
)
from datafed.protocols._psi import (
    PsiParty1,
    PsiParty2,
    PsiResult,
    PsiRound1,
    PsiRound2,
    PsiRound3,
    PsiRound4,
)
from datafed.protocols._secagg_client import SecAggClient
from datafed.protocols._secagg_messages import (
    AdvertiseKeys,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    ShareKeys,
    Survivors,
    UnmaskShares,
)
from datafed.protocols._secagg_server import SecAggServer
from datafed.protocols.errors import (
    BudgetExhausted,
    InvalidMessage,
    ProtocolAbort,
    ProtocolError,
    RoundError,
)

__all__ = [
    "AdvertiseKeys",
    "BudgetExhausted",
    "Charge",
    "ForwardedShares",
    "HelperShare",
    "InputShare",
    "InvalidMessage",
    "KeyRoster",
    "LeaderShare",
    "MaskedInput",
    "Prio3",
    "Prio3Count",
    "Prio3Histogram",
    "Prio3MultihotCountVec",
    "Prio3Sum",
    "Prio3SumVec",
    "PrivacyAccountant",
    "ProtocolAbort",
    "ProtocolError",
    "PsiParty1",
    "PsiParty2",
    "PsiResult",
    "PsiRound1",
    "PsiRound2",
    "PsiRound3",
    "PsiRound4",
    "ReportRejected",
    "RoundError",
    "SecAggClient",
    "SecAggServer",
    "ShareKeys",
    "Survivors",
    "UnmaskShares",
    "VerifierShare",
    "VerifyState",
]
