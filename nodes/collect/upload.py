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

from datafed.collect import ENC_SIZE, TAG_SIZE, report_digest_of
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


#: A report's fields read out of its message once: ID, time, public share, Leader
#: share, the sealed Helper share's ``enc`` and ciphertext.
Fields = tuple[bytes, int, bytes, bytes, bytes, bytes]


def _checks(rt: TaskRuntime, reports: Sequence[Fields], now: int) -> list[str | None]:
    """Each report's refusal, or ``None``; the shares' elements checked all at once."""
    vdaf, field = rt.vdaf, rt.vdaf.field
    ct_len = rt.helper_share_len + TAG_SIZE
    public_len = vdaf.xof.SEED_SIZE * vdaf.SHARES if vdaf.uses_joint_rand else 0
    blind = vdaf.xof.SEED_SIZE if vdaf.uses_joint_rand else 0
    elems = vdaf.flp.MEAS_LEN + vdaf.flp.PROOF_LEN * vdaf.PROOFS
    share_len = elems * field.ENCODED_SIZE + blind
    check_time = rt.task.check_time
    out: list[str | None] = []
    for rid, t, public, leader, enc, ct in reports:
        if len(rid) != 16:
            out.append("invalid_message")
        elif (error := check_time(t, now)) is not None:
            out.append(error.value)
        elif (
            len(enc) != ENC_SIZE
            or len(ct) != ct_len
            or len(public) != public_len
            or len(leader) != share_len
        ):
            out.append("invalid_message")
        else:
            out.append(None)
    todo = [j for j, s in enumerate(out) if s is None]
    data = b"".join(reports[j][3][: share_len - blind] for j in todo)
    _, below = decode_columns(field, data, len(todo), elems)  # every element below p (§7.2.7)
    for j, ok in zip(todo, below.tolist(), strict=True):
        if not ok:
            out[j] = "invalid_message"
    return out


def store_uploads(rt: TaskRuntime, reports: Sequence[collect_pb2.CollectReport]) -> list[str]:
    """Check and durably store one upload; return a status per report (blocking).

    Time is the database's clock: every front end of the aggregator judges alike. Each
    report's fields are read out of its message once (no copy, no object per report).
    """
    now = rt.store.now_ms() // 1000
    fields: list[Fields] = [
        (r.report_id, r.time, r.public_share, r.leader_share, r.helper_enc, r.helper_ciphertext)
        for r in reports
    ]
    statuses = _checks(rt, fields, now)
    window = rt.task.window
    rows = [
        (f[0], f[1], window(f[1]), report_digest_of(*f), f[2:])
        for f, s in zip(fields, statuses, strict=True)
        if s is None
    ]
    refused = [s for s in statuses if s is not None]
    inserted = rt.store.insert_reports(rows, refused)
    stored = iter(inserted)
    return [s if s is not None else next(stored) for s in statuses]
