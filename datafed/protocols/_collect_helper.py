"""The Helper of a collection task: answers aggregation jobs and releases its share.

Follows draft-ietf-ppm-dap-18 §4.5.1.2 (Helper initialization) and §4.6.2
(aggregate shares), for Prio3 in one round: for each report of a job the Helper
checks the metadata, runs :func:`~datafed.protocols._pingpong.helper_init` on the
Leader's ``initialize`` message, and on success commits its output share to the
report's window and answers ``continue`` with the ``finish`` message; otherwise it
answers ``reject`` with the error.  A job is processed once: the same request
again gets the stored response (idempotent), a different request under the same
job ID is refused.
"""

from __future__ import annotations

from datafed.protocols._collect_aggregator import AggregatorState
from datafed.protocols._collect_types import (
    AggregateShareReq,
    AggregationJobInit,
    AggregationJobResp,
    BatchMismatch,
    CollectTask,
    ReportError,
    VerifyInit,
    VerifyResp,
)
from datafed.protocols._pingpong import Rejected, helper_init
from datafed.protocols.errors import InvalidMessage


class Helper(AggregatorState):
    """The Helper aggregator (aggregator id 1) of one task.

    ``verify_key`` is the VDAF verification key the Helper shares with the Leader (secret).
    """

    def __init__(self, task: CollectTask, verify_key: bytes) -> None:
        super().__init__(task, verify_key)
        self._jobs: dict[bytes, tuple[AggregationJobInit, AggregationJobResp]] = {}
        self._released: dict[tuple[int, int], AggregateShareReq] = {}

    def handle_init(self, req: AggregationJobInit, now: int) -> AggregationJobResp:
        """Process an aggregation job (DAP §4.5.1.2).

        Parameters
        ----------
        req : AggregationJobInit
            From :meth:`Leader.start_job`.
        now : int
            The Helper's clock (seconds).

        Returns
        -------
        AggregationJobResp
            One :class:`VerifyResp` per report, in order.

        Raises
        ------
        InvalidMessage
            Wrong task, a reused job ID with a different request, or duplicate
            report IDs within the job (the whole job is refused, nothing is committed).
        """
        if req.task_id != self.task.task_id:
            raise InvalidMessage
        done = self._jobs.get(req.job_id)
        if done is not None:
            if done[0] != req:
                raise InvalidMessage
            return done[1]
        ids = [v.report_id for v in req.verify_inits]
        if len(set(ids)) != len(ids):
            raise InvalidMessage
        resps = tuple(self._one(v, now) for v in req.verify_inits)
        resp = AggregationJobResp(req.job_id, resps)
        self._jobs[req.job_id] = (req, resp)
        return resp

    def _check(self, v: VerifyInit, now: int) -> ReportError | None:
        if len(v.report_id) != 16:
            return ReportError.INVALID_MESSAGE
        error = self.task.check_time(v.time, now)
        if error is not None:
            return error
        if self.was_seen(v.report_id):
            return ReportError.REPORT_REPLAYED
        if self.is_collected(v.time):
            return ReportError.BATCH_COLLECTED
        return None

    def _one(self, v: VerifyInit, now: int) -> VerifyResp:
        error = self._check(v, now)
        if error is not None:
            if (
                error is not ReportError.INVALID_MESSAGE
                and error is not ReportError.REPORT_REPLAYED
            ):
                self.bucket(self.task.window(v.time)).reject(error)
            return VerifyResp(v.report_id, None, error)
        state = helper_init(
            self.task.vdaf,
            self._verify_key,
            self.task.ctx,
            v.report_id,
            v.public_share,
            v.helper_share,
            v.payload,
        )
        self.mark_seen(v.report_id)
        bucket = self.bucket(self.task.window(v.time))
        if isinstance(state, Rejected):
            bucket.reject(ReportError.VDAF_VERIFY_ERROR)
            return VerifyResp(v.report_id, None, ReportError.VDAF_VERIFY_ERROR)
        bucket.commit(self.task.vdaf, v.report_id, state.out_share)
        return VerifyResp(v.report_id, state.outbound)

    def aggregate_share(self, req: AggregateShareReq) -> bytes:
        """Release the Helper's aggregate share of an interval (DAP §4.6.2).

        Parameters
        ----------
        req : AggregateShareReq
            From :meth:`Leader.collect`.

        Returns
        -------
        bytes
            The encoded aggregate share (sealed to the collector by the transport).

        Raises
        ------
        CollectionError
            ``BatchInvalid``, ``BatchOverlap``, ``InvalidBatchSize``, or
            ``BatchMismatch`` when the Leader's count or checksum differ.
        """
        if req.task_id != self.task.task_id:
            raise InvalidMessage
        key = (req.start, req.duration)
        previous = self._released.get(key)
        # The same request again (a Leader retry) gets the same share; nothing else does.
        batch = self.batch(req.start, req.duration, allow_collected=previous == req)
        if batch.report_count != req.report_count or batch.checksum != req.checksum:
            raise BatchMismatch("the aggregators disagree on the reports of this batch")
        self.close(batch.windows)
        self._released[key] = req
        return self.task.vdaf.encode_agg_share(batch.agg_share)
