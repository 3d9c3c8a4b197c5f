"""Collection of live data: devices and gateways upload Prio3 reports, collectors fetch windows.

A **collection task** (``[[collect]]`` in both aggregators' ``node.toml``) names a
Prio3 variant, a Leader and a Helper node, the window length and the minimum batch
size. Devices shard each measurement into two input shares with a zero-knowledge
validity proof; the Helper's share is sealed to the Helper (:mod:`._seal`), so the
Leader, which stores and relays every report, learns nothing about the measurement.
The aggregators verify each proof on the shares, aggregate valid reports per window,
count and ledger rejected ones, and release each closed window's aggregate shares to
the task's collectors. ``docs/collect.md`` has the design; ``docs/prio3.md`` the VDAF.

* :class:`TaskSpec`, :class:`DpSpec`: a task's public parameters and its task ID;
* :class:`Uploader`: the device or gateway client (batches, retries with the same IDs);
* :class:`Collector`: fetch one window, or ``async for window in collector.watch(task)``;
* :func:`load_alerts`, :func:`deliver`: the collector's alert rules on released windows,
  judged with the noise taken into account (:mod:`._alerts`).
"""

from datafed.collect._alert_sinks import deliver
from datafed.collect._alerts import Alert, AlertError, Alerts, load_alerts
from datafed.collect._collector import Collector, Window, WindowInfo
from datafed.collect._seal import (
    ENC_SIZE,
    TAG_SIZE,
    ReportBinding,
    SealedShare,
    ShareOpener,
    seal_shares,
)
from datafed.collect._task import VDAFS, DpSpec, TaskSpec
from datafed.collect._upload import DeviceTask, GatewayConfig, Uploader, UploadResult, check_task
from datafed.collect._wire import (
    SealedReport,
    answer_digest,
    report_digest,
    report_digest_of,
    spec_from_proto,
    spec_to_proto,
)
from datafed.collect.errors import CollectError, SealError

__all__ = [
    "ENC_SIZE",
    "TAG_SIZE",
    "VDAFS",
    "Alert",
    "AlertError",
    "Alerts",
    "CollectError",
    "Collector",
    "DeviceTask",
    "DpSpec",
    "GatewayConfig",
    "ReportBinding",
    "SealError",
    "SealedReport",
    "SealedShare",
    "ShareOpener",
    "TaskSpec",
    "UploadResult",
    "Uploader",
    "Window",
    "WindowInfo",
    "answer_digest",
    "check_task",
    "deliver",
    "load_alerts",
    "report_digest",
    "report_digest_of",
    "seal_shares",
    "spec_from_proto",
    "spec_to_proto",
]
