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
from datafed.wire.fields import from_message, to_message

__all__ = [
    "SealedReport",
    "answer_digest",
    "report_digest",
    "report_digest_of",
    "spec_from_proto",
    "spec_to_proto",
]


#: TaskSpec fields that differ on the wire: (field, wire name, optional: -1 when absent).
_RENAMED = (
    ("time_precision", "time_precision_s", False),
    ("max_measurement", "max_measurement", True),
    ("length", "length", True),
    ("max_weight", "max_weight", True),
    ("chunk_length", "chunk_length", True),
    ("start", "start_s", True),
    ("end", "end_s", True),
    ("max_skew", "max_skew_s", False),
)


def _opt(v: int | None) -> int:
    return -1 if v is None else v


def _get(v: int) -> int | None:
    return None if v < 0 else v


def spec_to_proto(spec: TaskSpec) -> collect_pb2.CollectTaskParams:
    """The wire form of a task's parameters."""
    renamed = {
        wire: _opt(getattr(spec, name)) if optional else getattr(spec, name)
        for name, wire, optional in _RENAMED
    }
    return to_message(collect_pb2.CollectTaskParams, spec, dp=_dp_to_proto(spec.dp), **renamed)


def spec_from_proto(msg: collect_pb2.CollectTaskParams) -> TaskSpec:
    """A task's parameters from the wire (ValueError if they do not make a task)."""
    dp = _dp_from_proto(msg.dp) if msg.HasField("dp") else None
    renamed = {
        name: _get(getattr(msg, wire)) if optional else getattr(msg, wire)
        for name, wire, optional in _RENAMED
    }
    return from_message(TaskSpec, msg, dp=dp, **renamed)


def _dp_to_proto(d: DpSpec | None) -> collect_pb2.CollectDp | None:
    if d is None:
        return None
    return to_message(
        collect_pb2.CollectDp,
        d,
        epsilon=-1.0 if d.epsilon is None else d.epsilon,
        rho=-1.0 if d.rho is None else d.rho,
    )


def _dp_from_proto(d: collect_pb2.CollectDp) -> DpSpec:
    if d.mechanism not in ("laplace", "gaussian"):
        raise ValueError(f"unknown noise mechanism {d.mechanism!r}")
    return from_message(
        DpSpec,
        d,
        epsilon=None if d.epsilon < 0 else d.epsilon,
        rho=None if d.rho < 0 else d.rho,
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
    return report_digest_of(
        msg.report_id,
        msg.time,
        msg.public_share,
        msg.leader_share,
        msg.helper_enc,
        msg.helper_ciphertext,
    )


_DIGEST_LABEL = b"datafed/collect/v1/report\x00"


def report_digest_of(
    report_id: bytes, time: int, public: bytes, leader: bytes, enc: bytes, ct: bytes
) -> bytes:
    """:func:`report_digest` of a report's fields already read out of its message."""
    return hashlib.sha256(
        b"".join(
            (
                _DIGEST_LABEL,
                len(report_id).to_bytes(4, "big"),
                report_id,
                len(public).to_bytes(4, "big"),
                public,
                len(leader).to_bytes(4, "big"),
                leader,
                len(enc).to_bytes(4, "big"),
                enc,
                len(ct).to_bytes(4, "big"),
                ct,
                time.to_bytes(8, "big"),
            )
        )
    ).digest()


def answer_digest(reply: collect_pb2.GetWindowResponse) -> str:
    """Hex SHA-256 of a window answer with its ledger head and receipts cleared."""
    bare = collect_pb2.GetWindowResponse()
    bare.CopyFrom(reply)
    for name in ("ledger", "receipt", "close_receipt"):
        bare.ClearField(name)  # type: ignore[arg-type]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()
