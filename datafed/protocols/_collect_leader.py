"""The Leader of a collection task: uploads, aggregation jobs, collection.

Follows draft-ietf-ppm-dap-18: upload checks (§4.4.2, Leader behaviour),
aggregation jobs (§4.5.1.1 Leader initialization, one round for Prio3), batch
buckets (§4.5.2.4) and collection (§4.6.1).  Pure: time comes in as ``now``,
randomness only for job IDs.  Reports wait in a queue between upload and their
aggregation job; a job's results are committed only after the whole Helper
response has been checked, so a malformed response changes nothing and can be
retried.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from datafed.protocols._collect_aggregator import AggregatorState
from datafed.protocols._collect_types import (
    AggregateShareReq,
    AggregationJobInit,
    AggregationJobResp,
    BatchOverlap,
    Collection,
    CollectTask,
    Report,
    ReportError,
    VerifyInit,
)
from datafed.protocols._pingpong import Continued, Rejected, leader_continued, leader_init
from datafed.protocols._prio3_types import ReportRejected
from datafed.protocols.errors import InvalidMessage, RoundError


@dataclass(frozen=True)
class JobOutcome:
    """What one finished aggregation job did at the Leader."""

    committed: int
    rejected: dict[ReportError, int]


class Leader(AggregatorState):
    """The Leader aggregator (aggregator id 0) of one task.

    ``verify_key`` is the VDAF verification key the Leader shares with the Helper (secret).
    """

    def __init__(self, task: CollectTask, verify_key: bytes) -> None:
        super().__init__(task, verify_key)
        self._pending: OrderedDict[bytes, Report] = OrderedDict()
        self._jobs: dict[bytes, tuple[AggregationJobInit, dict[bytes, tuple[int, Continued]]]] = {}
        self._in_flight: dict[int, int] = {}  # window -> reports in unfinished jobs
        self._collections: dict[tuple[int, int], tuple[AggregateShareReq, int]] = {}
        self._leader_shares: dict[tuple[int, int], bytes] = {}
        self.upload_rejected: dict[ReportError, int] = {}

    # -- upload (DAP §4.4.2) ---------------------------------------------------------
    def upload(self, report: Report, now: int) -> ReportError | None:
        """Accept a report into the queue, or say why not (nothing is stored then).

        Parameters
        ----------
        report : Report
            From the client.
        now : int
            The Leader's clock (seconds).

        Returns
        -------
        ReportError or None
            ``None`` if accepted.
        """
        error = self._upload_error(report, now)
        if error is not None:
            self.upload_rejected[error] = self.upload_rejected.get(error, 0) + 1
            return error
        self._pending[report.report_id] = report
        return None

    def _upload_error(self, report: Report, now: int) -> ReportError | None:
        if not isinstance(report.report_id, bytes) or len(report.report_id) != 16:
            return ReportError.INVALID_MESSAGE
        error = self.task.check_time(report.time, now)
        if error is not None:
            return error
        if report.report_id in self._pending or self.was_seen(report.report_id):
            return ReportError.REPORT_REPLAYED
        if self.is_collected(report.time):
            return ReportError.BATCH_COLLECTED
        return None

    @property
    def pending(self) -> int:
        """Reports uploaded and not yet in an aggregation job."""
        return len(self._pending)

    # -- aggregation jobs (DAP §4.5.1.1) ----------------------------------------------
    def start_job(self, now: int, max_reports: int | None = None) -> AggregationJobInit | None:
        """Take queued reports into a new aggregation job for the Helper.

        Each report gets the Leader's ``initialize`` message; reports whose Leader
        share does not verify are rejected here and never sent.

        Parameters
        ----------
        now : int
            The Leader's clock (seconds).
        max_reports : int, optional
            Cap on the job size (default: every queued report).

        Returns
        -------
        AggregationJobInit or None
            ``None`` when no report is left to send.
        """
        taken: list[Report] = []
        while self._pending and (max_reports is None or len(taken) < max_reports):
            taken.append(self._pending.popitem(last=False)[1])
        inits: list[VerifyInit] = []
        states: dict[bytes, tuple[int, Continued]] = {}
        for r in taken:
            window = self.task.window(r.time)
            bucket = self.bucket(window)
            if bucket.collected:  # collected while the report waited in the queue
                bucket.reject(ReportError.BATCH_COLLECTED)
                continue
            self.mark_seen(r.report_id)
            state = self._init(r)
            if isinstance(state, ReportError):
                bucket.reject(state)
                continue
            states[r.report_id] = (r.time, state)
            self._in_flight[window] = self._in_flight.get(window, 0) + 1
            inits.append(
                VerifyInit(r.report_id, r.time, r.public_share, r.helper_share, state.outbound)
            )
        if not inits:
            return None
        req = AggregationJobInit(self.task.task_id, secrets.token_bytes(16), tuple(inits))
        self._jobs[req.job_id] = (req, states)
        return req

    def _init(self, r: Report) -> Continued | ReportError:
        vdaf = self.task.vdaf
        try:  # decoding failures are malformed reports, not failed proofs
            vdaf.decode_public_share(r.public_share)
            vdaf.decode_input_share(0, r.leader_share)
        except ReportRejected:
            return ReportError.INVALID_MESSAGE
        state = leader_init(
            vdaf, self._verify_key, self.task.ctx, r.report_id, r.public_share, r.leader_share
        )
        if isinstance(state, Rejected):
            return ReportError.VDAF_VERIFY_ERROR
        return state

    def finish_job(self, resp: AggregationJobResp) -> JobOutcome:
        """Commit a job from the Helper's response (DAP §4.5.1.1, after the response).

        Parameters
        ----------
        resp : AggregationJobResp
            The Helper's answer to :meth:`start_job`'s request.

        Returns
        -------
        JobOutcome
            Reports committed and rejected.

        Raises
        ------
        InvalidMessage
            Unknown job, or a response whose report IDs differ from the request's
            (nothing is committed and the job stays open for a correct response).
        """
        job = self._jobs.get(resp.job_id)
        if job is None:
            raise InvalidMessage
        req, states = job
        if [v.report_id for v in resp.verify_resps] != [v.report_id for v in req.verify_inits]:
            raise InvalidMessage
        if any((v.payload is None) == (v.error is None) for v in resp.verify_resps):
            raise InvalidMessage
        del self._jobs[resp.job_id]
        committed, rejected = 0, dict[ReportError, int]()
        vdaf, ctx = self.task.vdaf, self.task.ctx
        for v in resp.verify_resps:
            time, state = states[v.report_id]
            window = self.task.window(time)
            self._in_flight[window] -= 1
            bucket = self.bucket(window)
            error = v.error
            if error is None:
                assert v.payload is not None
                done = leader_continued(vdaf, ctx, state, v.payload)
                if isinstance(done, Rejected):
                    error = ReportError.VDAF_VERIFY_ERROR
                elif bucket.collected:
                    error = ReportError.BATCH_COLLECTED
                else:
                    bucket.commit(vdaf, v.report_id, done.out_share)
                    committed += 1
                    continue
            bucket.reject(error)
            rejected[error] = rejected.get(error, 0) + 1
        return JobOutcome(committed, rejected)

    # -- collection (DAP §4.6.1) ------------------------------------------------------
    def collect(self, start: int, duration: int) -> AggregateShareReq:
        """Close an interval and ask the Helper for its share (call again to retry).

        Raises
        ------
        CollectionError
            ``BatchInvalid``, ``BatchOverlap`` or ``InvalidBatchSize``.
        RoundError
            An aggregation job touching the interval is still open.
        """
        key = (start, duration)
        previous = self._collections.get(key)
        if previous is not None:
            return previous[0]
        windows = self.interval_windows(start, duration)
        if any(self._in_flight.get(w, 0) for w in windows):
            raise RoundError("finish the aggregation jobs of this interval first")
        batch = self.batch(start, duration)
        self.close(batch.windows)
        req = AggregateShareReq(
            self.task.task_id, start, duration, batch.report_count, batch.checksum
        )
        self._collections[key] = (req, batch.rejected_count)
        self._leader_shares[key] = self.task.vdaf.encode_agg_share(batch.agg_share)
        return req

    def finish_collection(self, req: AggregateShareReq, helper_share: bytes) -> Collection:
        """The collection for the collector: both aggregate shares and the counts.

        Parameters
        ----------
        req : AggregateShareReq
            The request :meth:`collect` returned.
        helper_share : bytes
            The Helper's answer to it.

        Returns
        -------
        Collection
            For :func:`unshard_collection`.
        """
        key = (req.start, req.duration)
        stored = self._collections.get(key)
        if stored is None or stored[0] != req:
            raise BatchOverlap("no such collection in progress")
        return Collection(
            req.start,
            req.duration,
            req.report_count,
            stored[1],
            self._leader_shares[key],
            helper_share,
        )
