"""Multi-party protocol state machines: pure, no I/O.

* secure aggregation with dropouts (Bonawitz et al., CCS 2017):
  :class:`SecAggClient`, :class:`SecAggServer` and their round messages;
* private intersection-sum (Google's Private Join and Compute):
  :class:`PsiParty1`, :class:`PsiParty2` and their round messages;
* the differential-privacy budget: :class:`PrivacyAccountant`;
* Prio3 (draft-irtf-cfrg-vdaf-20): :class:`Prio3` and its variants
  :class:`Prio3Count`, :class:`Prio3Sum`, :class:`Prio3SumVec`,
  :class:`Prio3Histogram`, :class:`Prio3MultihotCountVec` (``docs/prio3.md``);
* windowed collection of Prio3 reports by two aggregators, in the spirit of DAP:
  :class:`CollectTask`, :func:`shard_report`, :class:`Leader`, :class:`Helper`,
  :func:`unshard_collection`.
"""

from datafed.protocols._budget import Charge, PrivacyAccountant
from datafed.protocols._collect_aggregator import WindowStats
from datafed.protocols._collect_batch import (
    HelperRun,
    LeaderStart,
    WindowSum,
    helper_run,
    leader_finish,
    leader_start,
)
from datafed.protocols._collect_helper import Helper
from datafed.protocols._collect_leader import JobOutcome, Leader
from datafed.protocols._collect_types import (
    AggregateShareReq,
    AggregationJobInit,
    AggregationJobResp,
    BatchInvalid,
    BatchMismatch,
    BatchOverlap,
    Collection,
    CollectionError,
    CollectTask,
    InvalidBatchSize,
    Report,
    ReportError,
    VerifyInit,
    VerifyResp,
    shard_report,
    unshard_collection,
)
from datafed.protocols._prio3 import Prio3
from datafed.protocols._prio3_batch import InitBatch, verify_init_batch
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
    consistency_message,
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
    "AggregateShareReq",
    "AggregationJobInit",
    "AggregationJobResp",
    "BatchInvalid",
    "BatchMismatch",
    "BatchOverlap",
    "BudgetExceeded",
    "Charge",
    "CollectTask",
    "Collection",
    "CollectionError",
    "ForwardedShares",
    "Helper",
    "HelperRun",
    "HelperShare",
    "InitBatch",
    "InputShare",
    "InvalidBatchSize",
    "InvalidMessage",
    "JobOutcome",
    "KeyRoster",
    "Leader",
    "LeaderShare",
    "LeaderStart",
    "MachineError",
    "MaskedInput",
    "Prio3",
    "Prio3Count",
    "Prio3Histogram",
    "Prio3MultihotCountVec",
    "Prio3Sum",
    "Prio3SumVec",
    "PrivacyAccountant",
    "ProtocolAbort",
    "PsiParty1",
    "PsiParty2",
    "PsiResult",
    "PsiRound1",
    "PsiRound2",
    "PsiRound3",
    "PsiRound4",
    "Report",
    "ReportError",
    "ReportRejected",
    "RoundError",
    "SecAggClient",
    "SecAggServer",
    "ShareKeys",
    "Survivors",
    "UnmaskShares",
    "VerifierShare",
    "VerifyInit",
    "VerifyResp",
    "VerifyState",
    "WindowStats",
    "WindowSum",
    "consistency_message",
    "helper_run",
    "leader_finish",
    "leader_start",
    "shard_report",
    "unshard_collection",
    "verify_init_batch",
]
