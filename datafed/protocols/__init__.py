"""Multi-party protocol state machines: pure, no I/O.

* secure aggregation with dropouts (Bonawitz et al., CCS 2017):
  :class:`SecAggClient`, :class:`SecAggServer` and their round messages;
* private intersection-sum (Google's Private Join and Compute):
  :class:`PsiParty1`, :class:`PsiParty2` and their round messages;
* the differential-privacy budget: :class:`PrivacyAccountant`.
"""

from datafed.protocols._budget import Charge, PrivacyAccountant
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
    BudgetExceeded,
    InvalidMessage,
    MachineError,
    ProtocolAbort,
    RoundError,
)

__all__ = [
    "AdvertiseKeys",
    "BudgetExceeded",
    "Charge",
    "ForwardedShares",
    "InvalidMessage",
    "KeyRoster",
    "MachineError",
    "MaskedInput",
    "PrivacyAccountant",
    "ProtocolAbort",
    "PsiParty1",
    "PsiParty2",
    "PsiResult",
    "PsiRound1",
    "PsiRound2",
    "PsiRound3",
    "PsiRound4",
    "RoundError",
    "SecAggClient",
    "SecAggServer",
    "ShareKeys",
    "Survivors",
    "UnmaskShares",
]
