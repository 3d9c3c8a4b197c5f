"""Windowed collection by a Leader and a Helper (DAP-like), in memory.

Attack tests (``test_attack_*``) play a malicious device (out-of-range values with
honest-looking proofs, replays, tampered shares), a misbehaving Leader (replays
into the Helper, lies about the batch) and a faulty network (lost or mangled
responses): each must end in a counted rejection or a clear error, with nothing
half-aggregated.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest

from datafed.hazmat import CountCircuit, Field64, Field128, HistogramCircuit
from datafed.protocols import (
    AggregationJobResp,
    BatchInvalid,
    BatchMismatch,
    BatchOverlap,
    InvalidBatchSize,
    InvalidMessage,
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3Sum,
    Report,
    ReportError,
    RoundError,
)

from .collect_harness import T0, WINDOW, Deployment, deploy


class EvilCount(CountCircuit):
    """A device that encodes any integer and proves honestly over it."""

    def encode(self, measurement: int) -> list[int]:
        return [measurement % self.field.MODULUS]


class EvilHistogram(HistogramCircuit):
    """A device that reports several buckets at once."""

    def encode(self, measurement: list[int]) -> list[int]:  # type: ignore[override]
        return list(measurement)


def evil_report(d: Deployment, vdaf: Prio3[Any, Any], measurement: Any, time: int) -> Report:
    report_id = os.urandom(16)
    public, shares = vdaf.shard(d.task.ctx, measurement, report_id, os.urandom(vdaf.RAND_SIZE))
    return Report(
        report_id,
        time,
        vdaf.encode_public_share(public),
        vdaf.encode_input_share(shares[0]),
        vdaf.encode_input_share(shares[1]),
    )


def test_three_windows_of_counts() -> None:
    d = deploy(Prio3Count())
    d.now = T0 + 3 * WINDOW
    truth = {}
    for w in range(3):
        start = T0 + w * WINDOW
        values = [(i * 7 + w) % 3 == 0 for i in range(12)]
        truth[start] = sum(values)
        for i, v in enumerate(values):
            d.send(int(v), time=start + i)
    assert d.aggregate(max_reports=10) == 36
    for start, expected in truth.items():
        assert d.collect(start) == (expected, 12, 0)
    stats = d.leader.windows()
    assert [(s.start, s.report_count, s.collected) for s in stats] == [
        (T0 + w * WINDOW, 12, True) for w in range(3)
    ]
    assert [s.report_count for s in d.helper.windows()] == [12, 12, 12]


def test_multi_window_interval_and_histogram() -> None:
    d = deploy(Prio3Histogram(4), min_batch_size=3)
    d.now = T0 + 2 * WINDOW
    for i in range(8):
        d.send(i % 4, time=T0 + (i % 2) * WINDOW)
    d.now = T0 + 2 * WINDOW
    d.aggregate()
    assert d.collect(T0, 2 * WINDOW) == ([2, 2, 2, 2], 8, 0)


def test_attack_out_of_range_device_is_rejected_counted_never_aggregated() -> None:
    # Sensors in one group send 10^9 where 0/1 belongs; their proofs are honest over the lie.
    d = deploy(Prio3Count())
    evil = Prio3(EvilCount(Field64), shares=2, vdaf_id=1)
    for i in range(10):
        d.send(1, time=T0 + i)
    for i in range(4):
        assert d.upload(evil_report(d, evil, 10**9, T0 + 20 + i)) is None  # uploads look fine
    d.now = T0 + WINDOW
    assert d.aggregate() == 10
    assert d.collect(T0) == (10, 10, 4)
    (window,) = d.leader.windows()
    assert window.rejected == {ReportError.VDAF_VERIFY_ERROR: 4}
    assert d.helper.windows()[0].rejected == {ReportError.VDAF_VERIFY_ERROR: 4}


def test_attack_two_hot_histogram_is_rejected() -> None:
    d = deploy(Prio3Histogram(4), min_batch_size=1)
    evil = Prio3(EvilHistogram(Field128, 4, d.task.vdaf.chunk_length), shares=2, vdaf_id=4)  # type: ignore[attr-defined]
    d.upload(evil_report(d, evil, [1, 1, 0, 0], T0))
    d.upload(evil_report(d, evil, [0, 0, 0, 0], T0))
    d.send(3, time=T0)
    d.now = T0 + WINDOW
    assert d.aggregate() == 1
    assert d.collect(T0) == ([0, 0, 0, 1], 1, 2)


def test_attack_replayed_reports_are_rejected_everywhere() -> None:
    d = deploy(Prio3Count(), min_batch_size=1)
    r = d.send(1, time=T0)
    assert d.upload(r) is ReportError.REPORT_REPLAYED  # while queued
    d.now = T0 + 10
    assert d.aggregate() == 1
    assert d.upload(r) is ReportError.REPORT_REPLAYED  # after aggregation
    # A Leader that replays a report into a new job: the Helper refuses it.
    fresh = deploy(Prio3Count(), min_batch_size=1)
    fresh.helper = d.helper
    fresh.task = d.task
    fresh.leader = type(d.leader)(d.task, d.leader._verify_key)
    fresh.now = d.now
    assert fresh.upload(r) is None
    req = fresh.leader.start_job(fresh.now)
    assert req is not None
    resp = d.helper.handle_init(req, fresh.now)
    assert [v.error for v in resp.verify_resps] == [ReportError.REPORT_REPLAYED]
    assert fresh.leader.finish_job(resp).rejected == {ReportError.REPORT_REPLAYED: 1}
    assert d.collect(T0) == (1, 1, 0)


def test_attack_duplicate_ids_in_one_job_refuse_the_whole_job() -> None:
    d = deploy(Prio3Count(), min_batch_size=1)
    d.send(1, time=T0)
    d.send(0, time=T0)
    req = d.leader.start_job(d.now)
    assert req is not None
    dup = replace(req, verify_inits=(req.verify_inits[0], req.verify_inits[0]))
    with pytest.raises(InvalidMessage):
        d.helper.handle_init(dup, d.now)
    assert d.helper.windows() == []  # nothing committed
    with pytest.raises(InvalidMessage):
        d.helper.handle_init(replace(req, task_id=os.urandom(32)), d.now)
    d.leader.finish_job(d.helper.handle_init(req, d.now))
    assert d.collect(T0) == (1, 2, 0)


def test_time_checks_at_upload_and_helper() -> None:
    d = deploy(Prio3Count(), min_batch_size=1, start=T0, end=T0 + 100 * WINDOW)
    d.send(1, time=T0 - 1)
    d.send(1, time=T0 + 100 * WINDOW)
    d.send(1, time=d.now + 3600)
    d.send(1, time=-5)
    assert d.rejected_uploads == [
        ReportError.TASK_NOT_STARTED,
        ReportError.TASK_EXPIRED,
        ReportError.REPORT_TOO_EARLY,
        ReportError.INVALID_MESSAGE,
    ]
    assert d.upload(Report(b"short", T0, b"", b"", b"")) is ReportError.INVALID_MESSAGE
    assert d.leader.pending == 0
    assert d.leader.upload_rejected[ReportError.INVALID_MESSAGE] == 2
    # The Helper checks the same metadata itself (a Leader may forward anything).
    ok = d.send(1, time=T0)
    req = d.leader.start_job(d.now)
    assert req is not None
    early = replace(
        req, job_id=os.urandom(16), verify_inits=(replace(req.verify_inits[0], time=d.now + 3600),)
    )
    assert [v.error for v in d.helper.handle_init(early, d.now).verify_resps] == [
        ReportError.REPORT_TOO_EARLY
    ]
    d.leader.finish_job(d.helper.handle_init(req, d.now))
    assert d.collect(T0) == (1, 1, 0)
    assert ok.report_id == req.verify_inits[0].report_id


def test_reports_for_a_collected_window_are_refused() -> None:
    d = deploy(Prio3Count(), min_batch_size=1)
    d.send(1, time=T0)
    d.now = T0 + WINDOW
    d.aggregate()
    d.collect(T0)
    assert d.upload(d.send(1, time=T0 + 5)) is not None
    assert ReportError.BATCH_COLLECTED in d.rejected_uploads
    # Queued before the window closed, aggregated after: rejected, counted, not added.
    d2 = deploy(Prio3Count(), min_batch_size=1)
    d2.send(1, time=T0)
    d2.now = T0 + WINDOW
    d2.aggregate()
    late = d2.send(1, time=T0 + 1)
    assert late is not None and d2.leader.pending == 1
    d2.collect(T0)
    assert d2.aggregate() == 0
    assert d2.leader.windows()[0].rejected == {ReportError.BATCH_COLLECTED: 1}


def test_collection_errors() -> None:
    d = deploy(Prio3Sum(100), min_batch_size=5)
    for i in range(4):
        d.send(i, time=T0 + i)
    d.now = T0 + WINDOW
    d.aggregate()
    with pytest.raises(InvalidBatchSize):
        d.collect(T0)
    with pytest.raises(BatchInvalid):
        d.collect(T0 + 1)
    with pytest.raises(BatchInvalid):
        d.collect(T0, WINDOW // 2)
    d.send(50, time=T0 + 7)
    with pytest.raises(RoundError):  # a job over this window is still open
        req = d.leader.start_job(d.now)
        d.collect(T0)
    assert req is not None
    d.leader.finish_job(d.helper.handle_init(req, d.now))
    assert d.collect(T0) == (56, 5, 0)  # below the minimum nothing closed: collect later
    with pytest.raises(BatchOverlap):
        d.helper.aggregate_share(
            replace(d.leader.collect(T0, WINDOW), report_count=5, checksum=bytes(32))
        )
    with pytest.raises(BatchOverlap):
        d.collect(T0 - WINDOW, 2 * WINDOW)


def test_attack_leader_lying_about_the_batch_is_caught() -> None:
    d = deploy(Prio3Count(), min_batch_size=2)
    for i in range(3):
        d.send(1, time=T0 + i)
    d.now = T0 + WINDOW
    d.aggregate()
    req = d.leader.collect(T0, WINDOW)
    with pytest.raises(BatchMismatch):
        d.helper.aggregate_share(replace(req, report_count=2))
    with pytest.raises(BatchMismatch):
        d.helper.aggregate_share(replace(req, checksum=bytes(32)))
    share = d.helper.aggregate_share(req)
    assert d.helper.aggregate_share(req) == share  # a Leader retry gets the same share


def test_helper_down_then_catches_up_nothing_lost() -> None:
    d = deploy(Prio3Count(), min_batch_size=1)
    for i in range(6):
        d.send(i % 2, time=T0 + i)
    req = d.leader.start_job(d.now)
    assert req is not None
    # The Helper is down: uploads still land in the Leader's queue.
    for i in range(4):
        d.send(1, time=T0 + 10 + i)
    assert d.leader.pending == 4
    # It comes back; the Leader resends the same job, and the response is lost once.
    lost = d.helper.handle_init(req, d.now)
    again = d.helper.handle_init(req, d.now)
    assert again == lost  # idempotent: no double commit
    d.leader.finish_job(again)
    d.now = T0 + WINDOW
    d.aggregate()
    assert d.collect(T0) == (7, 10, 0)


def test_attack_mangled_helper_response_commits_nothing() -> None:
    d = deploy(Prio3Count(), min_batch_size=1)
    for _ in range(3):
        d.send(1, time=T0)
    req = d.leader.start_job(d.now)
    assert req is not None
    resp = d.helper.handle_init(req, d.now)
    swapped = AggregationJobResp(resp.job_id, tuple(reversed(resp.verify_resps)))
    for bad in (
        swapped,
        AggregationJobResp(os.urandom(16), resp.verify_resps),
        replace(resp, verify_resps=resp.verify_resps[:2]),
    ):
        with pytest.raises(InvalidMessage):
            d.leader.finish_job(bad)
    assert d.leader.windows()[0].report_count == 0
    # A response whose payload is not a valid ping-pong finish: rejected, counted.
    bad_payload = replace(
        resp,
        verify_resps=(replace(resp.verify_resps[0], payload=b"\x02\x00"), *resp.verify_resps[1:]),
    )
    outcome = d.leader.finish_job(bad_payload)
    assert outcome.committed == 2 and outcome.rejected == {ReportError.VDAF_VERIFY_ERROR: 1}
    with pytest.raises(InvalidMessage):  # the job is closed now
        d.leader.finish_job(resp)


@pytest.mark.parametrize("part", ["leader_share", "helper_share", "public_share"])
def test_attack_tampered_report_parts(part: str) -> None:
    d = deploy(Prio3Histogram(5), min_batch_size=1)
    good = d.send(2, time=T0)
    bad = d.send(1, time=T0)
    d.leader._pending.pop(bad.report_id)
    blob = bytearray(getattr(bad, part))
    blob[len(blob) // 2] ^= 0x40
    assert d.upload(replace(bad, **{part: bytes(blob)})) is None
    d.now = T0 + WINDOW
    assert d.aggregate() == 1
    result, count, rejected = d.collect(T0)
    assert (result, count, rejected) == ([0, 0, 1, 0, 0], 1, 1)
    assert good.report_id != bad.report_id


def test_task_validation() -> None:
    with pytest.raises(ValueError):
        deploy(Prio3Count(shares=3))
    with pytest.raises(ValueError):
        deploy(Prio3Count(), min_batch_size=0)
    d = deploy(Prio3Count())
    with pytest.raises(ValueError):
        type(d.leader)(d.task, b"short key")


def test_batched_checksums_and_windows_match_the_per_report_definitions() -> None:
    """The batched steps' window checksum (XOR of SHA-256 of the IDs) and window starts."""
    import hashlib

    from datafed.protocols._collect_batch import _windows, _xor_ids

    def xor_ref(ids: list[bytes]) -> bytes:
        acc = 0
        for rid in ids:
            acc ^= int.from_bytes(hashlib.sha256(rid).digest(), "big")
        return acc.to_bytes(32, "big")

    for n in (0, 1, 2, 7, 1000):
        ids = [os.urandom(16) for _ in range(n)]
        assert _xor_ids(ids) == xor_ref(ids)
    task = deploy(Prio3Count(), min_batch_size=1).task
    times = [0, 1, WINDOW - 1, WINDOW, T0 + 17, -1, -WINDOW - 3, 2**62 + 5]
    assert _windows(task, times).tolist() == [task.window(t) for t in times]


def test_batched_message_fast_paths_match_the_ping_pong_codec() -> None:
    """The batched steps' one-field messages: encoded and read exactly as §5.7.1 says."""
    from datafed.protocols._collect_batch import _field, _message
    from datafed.protocols._pingpong import (
        CONTINUE,
        FINISH,
        INITIALIZE,
        decode_message,
        encode_message,
    )
    from datafed.protocols._prio3_types import ReportRejected

    def reference(kind: int, payload: bytes) -> bytes | None:
        try:
            got, fields = decode_message(payload)
        except ReportRejected:
            return None
        return fields[0] if got == kind else None

    payloads = [b"", b"\x00", b"\x02\x00\x00", bytes(5), b"\x03" + bytes(4)]
    for field in (b"", b"x", os.urandom(40)):
        for kind in (INITIALIZE, FINISH):
            good = encode_message(kind, field)
            assert _message(kind, field) == good
            payloads += [good, good + b"\x00", good[:-1], good[:1] + b"\xff" + good[2:]]
        payloads.append(encode_message(CONTINUE, field, b"yz"))
    for kind in (INITIALIZE, FINISH):
        for p in payloads:
            assert _field(kind, p) == reference(kind, p), (kind, p)
