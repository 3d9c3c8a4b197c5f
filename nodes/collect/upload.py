"""The Leader's upload checks (DAP §4.4.2): every report gets a status, none is half-stored.

A report is refused, with its own status, when it is malformed (a report ID that is not
16 bytes, a public or Leader share that does not decode, a sealed Helper share of the
wrong size), outside the task's time range, too far ahead of the Leader's clock, for a
window that is closed (or closing), or when its ID was used by another report. The
same report again -- a gateway retrying after a lost answer -- is ``DUPLICATE``: stored
once, aggregated once. Accepted reports are in the task's SQLite file, fsynced, before
the answer leaves; refusals are counted there and recorded in the next window entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from datafed.collect import ENC_SIZE, TAG_SIZE, report_digest
from datafed.hazmat import decode_columns
from datafed.proto.v1 import collect_pb2
from nodes.collect.runtime import TaskRuntime

__all__ = ["STATUS", "store_uploads"]

#: Our status names (DAP's ``ReportError`` where one fits) to the wire enum.
STATUS = {
    "accepted": collect_pb2.ACCEPTED,
    "duplicate": collect_pb2.DUPLICATE,
    "report_replayed": collect_pb2.REPORT_REPLAYED,
    "invalid_message": collect_pb2.INVALID_MESSAGE,
    "task_not_started": collect_pb2.TASK_NOT_STARTED,
    "task_expired": collect_pb2.TASK_EXPIRED,
    "report_too_early": collect_pb2.REPORT_TOO_EARLY,
    "batch_collected": collect_pb2.BATCH_COLLECTED,
}


def _checks(
    rt: TaskRuntime, reports: Sequence[collect_pb2.CollectReport], now: int
) -> list[str | None]:
    """Each report's refusal, or ``None``; the shares' elements checked all at once."""
    vdaf, field = rt.vdaf, rt.vdaf.field
    ct_len = rt.helper_share_len + TAG_SIZE
    public_len = vdaf.xof.SEED_SIZE * vdaf.SHARES if vdaf.uses_joint_rand else 0
    blind = vdaf.xof.SEED_SIZE if vdaf.uses_joint_rand else 0
    elems = vdaf.flp.MEAS_LEN + vdaf.flp.PROOF_LEN * vdaf.PROOFS
    share_len = elems * field.ENCODED_SIZE + blind
    out: list[str | None] = []
    for r in reports:
        error = rt.task.check_time(r.time, now) if len(r.report_id) == 16 else None
        if len(r.report_id) != 16:
            out.append("invalid_message")
        elif error is not None:
            out.append(error.value)
        elif (
            len(r.helper_enc) != ENC_SIZE
            or len(r.helper_ciphertext) != ct_len
            or len(r.public_share) != public_len
            or len(r.leader_share) != share_len
        ):
            out.append("invalid_message")
        else:
            out.append(None)
    todo = [j for j, s in enumerate(out) if s is None]
    data = b"".join(reports[j].leader_share[: share_len - blind] for j in todo)
    _, below = decode_columns(field, data, len(todo), elems)  # every element below p (§7.2.7)
    for j, ok in zip(todo, below.tolist(), strict=True):
        if not ok:
            out[j] = "invalid_message"
    return out


def store_uploads(rt: TaskRuntime, reports: Sequence[collect_pb2.CollectReport]) -> list[str]:
    """Check and durably store one upload; return a status per report (blocking).

    Time is the database's clock: every front end of the aggregator judges alike.
    """
    now = rt.store.now_ms() // 1000
    statuses = _checks(rt, reports, now)
    rows = [
        (
            bytes(r.report_id),
            int(r.time),
            rt.task.window(r.time),
            report_digest(r),
            (
                bytes(r.public_share),
                bytes(r.leader_share),
                bytes(r.helper_enc),
                bytes(r.helper_ciphertext),
            ),
        )
        for r, s in zip(reports, statuses, strict=True)
        if s is None
    ]
    refused = [s for s in statuses if s is not None]
    inserted = rt.store.insert_reports(rows, refused)
    stored = iter(inserted)
    return [s if s is not None else next(stored) for s in statuses]
