"""Wire forms of collection: task parameters, sealed reports and answer digests.

Protobuf messages stay at the boundary (``docs/architecture.md``): this module turns
them into :class:`~datafed.collect.TaskSpec` and :class:`SealedReport` and back, and
computes the digests the nodes record and the collector checks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from datafed.collect._seal import ReportBinding, SealedShare
from datafed.collect._task import DpSpec, TaskSpec
from datafed.proto.v1 import collect_pb2

__all__ = [
    "SealedReport",
    "answer_digest",
    "report_digest",
    "spec_from_proto",
    "spec_to_proto",
]


def _opt(v: int | None) -> int:
    return -1 if v is None else v


def _get(v: int) -> int | None:
    return None if v < 0 else v


def spec_to_proto(spec: TaskSpec) -> collect_pb2.CollectTaskParams:
    """The wire form of a task's parameters."""
    msg = collect_pb2.CollectTaskParams(
        name=spec.name,
        vdaf=spec.vdaf,
        leader=spec.leader,
        helper=spec.helper,
        time_precision_s=spec.time_precision,
        min_batch_size=spec.min_batch_size,
        max_measurement=_opt(spec.max_measurement),
        length=_opt(spec.length),
        max_weight=_opt(spec.max_weight),
        chunk_length=_opt(spec.chunk_length),
        start_s=_opt(spec.start),
        end_s=_opt(spec.end),
        max_skew_s=spec.max_skew,
    )
    if spec.dp is not None:
        d = spec.dp
        msg.dp.CopyFrom(
            collect_pb2.CollectDp(
                mechanism=d.mechanism,
                epsilon=-1.0 if d.epsilon is None else d.epsilon,
                rho=-1.0 if d.rho is None else d.rho,
                delta=d.delta,
                contributions=d.contributions,
            )
        )
    return msg


def spec_from_proto(msg: collect_pb2.CollectTaskParams) -> TaskSpec:
    """A task's parameters from the wire (ValueError if they do not make a task)."""
    dp = None
    if msg.HasField("dp"):
        d = msg.dp
        if d.mechanism not in ("laplace", "gaussian"):
            raise ValueError(f"unknown noise mechanism {d.mechanism!r}")
        dp = DpSpec(
            d.mechanism,  # type: ignore[arg-type]
            epsilon=None if d.epsilon < 0 else d.epsilon,
            rho=None if d.rho < 0 else d.rho,
            delta=d.delta,
            contributions=d.contributions,
        )
    return TaskSpec(
        name=msg.name,
        vdaf=msg.vdaf,
        leader=msg.leader,
        helper=msg.helper,
        time_precision=msg.time_precision_s,
        min_batch_size=msg.min_batch_size,
        max_measurement=_get(msg.max_measurement),
        length=_get(msg.length),
        max_weight=_get(msg.max_weight),
        chunk_length=_get(msg.chunk_length),
        start=_get(msg.start_s),
        end=_get(msg.end_s),
        max_skew=msg.max_skew_s,
        dp=dp,
    )


@dataclass(frozen=True)
class SealedReport:
    """A report ready to upload: the Leader's share in the clear, the Helper's sealed.

    Keep it to retry an upload: the same bytes under the same report ID are stored once
    (``DUPLICATE``), never counted twice.
    """

    report_id: bytes
    time: int
    public_share: bytes
    leader_share: bytes
    helper: SealedShare

    def binding(self, task_id: bytes) -> ReportBinding:
        """What the Helper's share is bound to."""
        return ReportBinding(task_id, self.report_id, self.time, self.public_share)

    def to_proto(self) -> collect_pb2.CollectReport:
        """The wire form."""
        return collect_pb2.CollectReport(
            report_id=self.report_id,
            time=self.time,
            public_share=self.public_share,
            leader_share=self.leader_share,
            helper_enc=self.helper.enc,
            helper_ciphertext=self.helper.ciphertext,
        )

    @classmethod
    def from_proto(cls, msg: collect_pb2.CollectReport) -> SealedReport:
        """From the wire (no checks: the Leader validates)."""
        return cls(
            bytes(msg.report_id),
            int(msg.time),
            bytes(msg.public_share),
            bytes(msg.leader_share),
            SealedShare(bytes(msg.helper_enc), bytes(msg.helper_ciphertext)),
        )


def report_digest(msg: collect_pb2.CollectReport) -> bytes:
    """SHA-256 of a report's fields, length-prefixed: tells a retry from a replay."""
    h = hashlib.sha256(b"datafed/collect/v1/report\x00")
    for part in (msg.report_id, msg.public_share, msg.leader_share):
        h.update(len(part).to_bytes(4, "big") + part)
    for part in (msg.helper_enc, msg.helper_ciphertext):
        h.update(len(part).to_bytes(4, "big") + part)
    h.update(msg.time.to_bytes(8, "big"))
    return h.digest()


def answer_digest(reply: collect_pb2.GetWindowResponse) -> str:
    """Hex SHA-256 of a window answer with its ledger head and receipts cleared."""
    bare = collect_pb2.GetWindowResponse()
    bare.CopyFrom(reply)
    for name in ("ledger", "receipt", "close_receipt"):
        bare.ClearField(name)  # type: ignore[arg-type]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()
