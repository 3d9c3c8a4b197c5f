"""A whole aggregation job at each aggregator, in one pass (DAP §4.5, Prio3 in one round).

The same decisions as :class:`~datafed.protocols.Leader` and
:class:`~datafed.protocols.Helper` take report by report (time checks, replays, closed
windows, verification, commit to the report's window), taken for a job's reports at
once over :mod:`datafed.protocols._prio3_batch`: no object per report, the verifier
shares and messages framed as §5.7.1 ping-pong messages (``initialize``, ``finish``).
Pure: the caller supplies what it persisted (closed windows, IDs already verified) and
stores what comes back.

* :func:`leader_start` -- the Leader's ``initialize`` message per report it sends, and
  the reports it rejects itself;
* :func:`helper_run` -- the Helper's answer per report and what it commits per window;
* :func:`leader_finish` -- the Leader's commit per window, from the Helper's answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datafed.protocols._collect_types import CollectTask, ReportError
from datafed.protocols._pingpong import FINISH, INITIALIZE, decode_message
from datafed.protocols._prio3_batch import (
    InitBatch,
    decode_verifier_shares,
    encode_verifier_shares,
    verifier_messages,
    verify_init_batch,
    verify_next_batch,
)
from datafed.protocols._prio3_types import ReportRejected

__all__ = ["HelperRun", "LeaderStart", "WindowSum", "helper_run", "leader_finish", "leader_start"]


@dataclass
class WindowSum:
    """What a job adds to one window: aggregate share, count, checksum, rejections."""

    agg: list[int] | None = None
    count: int = 0
    checksum: bytes = bytes(32)
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, error: ReportError | str, n: int = 1) -> None:
        """Count ``n`` rejections for ``error``."""
        key = error.value if isinstance(error, ReportError) else error
        self.rejected[key] = self.rejected.get(key, 0) + n


def _xor_ids(ids: Sequence[bytes]) -> bytes:
    """XOR of the SHA-256 of each report ID (a window's checksum, DAP §4.6)."""
    if not ids:
        return bytes(32)
    sha = hashlib.sha256
    digests = np.frombuffer(b"".join([sha(rid).digest() for rid in ids]), dtype=np.uint64)
    return bytes(np.bitwise_xor.reduce(digests.reshape(-1, 4), axis=0).tobytes())


def _message(kind: int, field: bytes) -> bytes:
    """``encode_message(kind, field)`` for the one-field kinds, without its checks."""
    return bytes((kind,)) + len(field).to_bytes(4, "big") + field


def _field(kind: int, payload: bytes) -> bytes | None:
    """The field of a well-formed one-field message of ``kind``, else ``None``.

    The same answer as :func:`decode_message` (its fast path): anything else is decoded
    by it, and a malformed or other message gives ``None``.
    """
    if (
        len(payload) >= 5
        and payload[0] == kind
        and int.from_bytes(payload[1:5], "big") == len(payload) - 5
    ):
        return payload[5:]
    try:
        got, fields = decode_message(payload)
    except ReportRejected:
        return None
    return fields[0] if got == kind else None


def _windows(task: CollectTask, times: Sequence[int]) -> np.ndarray[Any, Any]:
    """Each report's window start (``task.window`` of every time at once)."""
    t = np.fromiter(times, dtype=np.int64, count=len(times))
    return t - t % task.time_precision


def _commit(
    task: CollectTask,
    sums: dict[int, WindowSum],
    init: InitBatch,
    keep: np.ndarray[Any, Any],
    ids: Sequence[bytes],
    windows: np.ndarray[Any, Any],
) -> None:
    """Add the output shares of reports ``keep`` to their windows."""
    p = task.vdaf.field.MODULUS
    for w in sorted(set(int(x) for x in windows[keep])):
        mine = keep & (windows == w)
        s = sums.setdefault(w, WindowSum())
        s.agg = [int(x) % p for x in init.out_shares[:, mine].sum(axis=1)]
        s.count = int(mine.sum())
        s.checksum = _xor_ids([ids[int(j)] for j in np.flatnonzero(mine)])


@dataclass(frozen=True, eq=False)
class LeaderStart:
    """The Leader's side of a job until the Helper answers.

    ``sent``: indices (into the job's reports) of those sent, with their ``payloads``
    (``initialize`` messages); ``rejected``: per window, the Leader's own rejections.
    """

    sent: list[int]
    payloads: list[bytes]
    init: InitBatch
    rejected: dict[int, WindowSum]


def leader_start(
    task: CollectTask,
    verify_key: bytes,
    ids: Sequence[bytes],
    times: Sequence[int],
    public_shares: Sequence[bytes],
    leader_shares: Sequence[bytes],
    closed: set[int],
) -> LeaderStart:
    """The Leader's first step for every report of a job.

    Deterministic: a job rebuilt from the same reports sends the same messages.
    """
    vdaf = task.vdaf
    init = verify_init_batch(vdaf, verify_key, task.ctx, 0, ids, public_shares, leader_shares)
    windows = _windows(task, times)
    rejected: dict[int, WindowSum] = {}
    shares = encode_verifier_shares(vdaf, init)
    sent, payloads, ok = [], [], init.ok.tolist()
    for j, w in enumerate(windows.tolist()):
        if w in closed:  # closed while the report waited: cannot happen for a stored report
            rejected.setdefault(w, WindowSum()).reject(ReportError.BATCH_COLLECTED)
        elif not ok[j]:
            rejected.setdefault(w, WindowSum()).reject(ReportError.VDAF_VERIFY_ERROR)
        else:
            sent.append(j)
            payloads.append(_message(INITIALIZE, shares[j]))
    return LeaderStart(sent, payloads, init, rejected)


def leader_finish(
    task: CollectTask,
    start: LeaderStart,
    ids: Sequence[bytes],
    times: Sequence[int],
    answers: Sequence[tuple[str, bytes]],
    closed: set[int],
) -> dict[int, WindowSum]:
    """Per window, what the job commits at the Leader (with its own rejections).

    ``answers``: per sent report, the Helper's error (``""`` for none) and payload. An
    error the Leader does not know raises :class:`ValueError` (nothing is committed).
    """
    vdaf, n = task.vdaf, start.init.n
    if len(answers) != len(start.sent):
        raise ValueError("one answer per report sent")
    sums = {w: WindowSum(None, 0, bytes(32), dict(s.rejected)) for w, s in start.rejected.items()}
    windows = _windows(task, times)
    window_of = windows.tolist()
    keep = np.zeros(n, dtype=bool)
    messages: list[bytes | None] = [None] * n
    for j, (error, payload) in zip(start.sent, answers, strict=True):
        w = window_of[j]
        if error:
            sums.setdefault(w, WindowSum()).reject(ReportError(error))
            continue
        try:
            field = _field(FINISH, payload)
            if field is None:
                raise ReportRejected
            messages[j] = vdaf.decode_verifier_message(field)
            keep[j] = True
        except ReportRejected:
            sums.setdefault(w, WindowSum()).reject(ReportError.VDAF_VERIFY_ERROR)
    good = verify_next_batch(start.init, messages) & keep
    for jj in np.flatnonzero(keep & ~good):
        sums.setdefault(int(windows[jj]), WindowSum()).reject(ReportError.VDAF_VERIFY_ERROR)
    for jj in np.flatnonzero(good):
        if int(windows[jj]) in closed:
            sums.setdefault(int(windows[jj]), WindowSum()).reject(ReportError.BATCH_COLLECTED)
            good[jj] = False
    _commit(task, sums, start.init, good, ids, windows)
    return sums


@dataclass(frozen=True, eq=False)
class HelperRun:
    """The Helper's side of a job.

    Per report its answer (error or ``""``, payload); the IDs it verified; what it
    commits per window.
    """

    answers: list[tuple[str, bytes]]
    seen: list[bytes]
    sums: dict[int, WindowSum]


def _helper_check(
    task: CollectTask, rid: bytes, t: int, now: int, seen: set[bytes], closed: set[int]
) -> ReportError | None:
    if len(rid) != 16:
        return ReportError.INVALID_MESSAGE
    error = task.check_time(t, now)
    if error is not None:
        return error
    if rid in seen:
        return ReportError.REPORT_REPLAYED
    if task.window(t) in closed:
        return ReportError.BATCH_COLLECTED
    return None


def helper_run(
    task: CollectTask,
    verify_key: bytes,
    ids: Sequence[bytes],
    times: Sequence[int],
    public_shares: Sequence[bytes],
    helper_shares: Sequence[bytes | None],
    payloads: Sequence[bytes],
    *,
    seen: set[bytes],
    closed: set[int],
    now: int,
) -> HelperRun:
    """The Helper's step for every report of a job (DAP §4.5.1.2, see module docs).

    ``helper_shares``: ``None`` for a report whose sealed share did not open (answered
    ``hpke_decrypt_error`` by the caller: here it only stays out of everything).
    """
    vdaf, n = task.vdaf, len(ids)
    errors: list[ReportError | None] = [
        _helper_check(task, rid, t, now, seen, closed) for rid, t in zip(ids, times, strict=True)
    ]
    go = np.array([e is None and h is not None for e, h in zip(errors, helper_shares, strict=True)])
    shares = [h if h is not None else b"" for h in helper_shares]
    init = verify_init_batch(vdaf, verify_key, task.ctx, 1, ids, public_shares, shares)
    fields = [_field(INITIALIZE, payload) for payload in payloads]
    fine = np.array([f is not None for f in fields], dtype=bool)
    leader_shares = [f if f is not None else b"" for f in fields]
    v0, p0, decoded = decode_verifier_shares(vdaf, leader_shares)
    ok, messages = verifier_messages(vdaf, task.ctx, [(v0, p0), (init.verifiers, init.parts)], n)
    ok &= go & init.ok & fine & decoded & verify_next_batch(init, messages)
    windows = _windows(task, times)
    window_of, ok_of = windows.tolist(), ok.tolist()
    sums: dict[int, WindowSum] = {}
    answers, verified = [], []
    for j, rid in enumerate(ids):
        error = errors[j]
        if helper_shares[j] is None and error is None:
            answers.append(("", b""))  # the caller answers hpke_decrypt_error
            continue
        if error is None:
            verified.append(rid)  # went through verification: never again
            if ok_of[j]:
                msg = vdaf.encode_verifier_message(messages[j])
                answers.append(("", _message(FINISH, msg)))
                continue
            error = ReportError.VDAF_VERIFY_ERROR
        if error not in (ReportError.INVALID_MESSAGE, ReportError.REPORT_REPLAYED):
            sums.setdefault(window_of[j], WindowSum()).reject(error)
        answers.append((error.value, b""))
    _commit(task, sums, init, ok, ids, windows)
    return HelperRun(answers, verified, sums)
