"""A node's Prometheus metrics: ``GET /metrics`` on ``node.metrics_listen`` (text format 0.0.4).

This module counts (:class:`Metrics`, held by the node's context); :mod:`nodes.metrics_http`
reads the gauges at scrape time and serves them.

What a scrape shows (every name starts ``datafed_node_``):

* ``calls_total{method, code}`` and ``call_duration_seconds{method}`` (histogram): every
  gRPC call :class:`nodes.intercept.CallGuard` guarded, by method and final status;
* ``ledger_records_total{operation, decision}``: entries this process appended (queries
  approved, released or denied, refusals of calls, reloads...);
* ``ledger_entries``, ``ledger_unsigned_entries`` and ``ledger_signing_lag_seconds``: the
  log's size, the entries no signed checkpoint covers yet and the age of the oldest;
* ``dp_budget_epsilon{dataset}`` and ``dp_budget_epsilon_left{dataset, scope}``: the
  configured budget and what is left of it (``scope="requester"``: the least left to any
  one requester);
* ``open_jobs``, ``paillier_key_cache_bytes`` and ``ckks_context_cache_bytes`` (and their
  limits), ``info{node, version}``.

Who may scrape: the node's operator.  No metric carries a data value, a group, a row
count or a requester's name, and the refusals it counts are the ledger's (which depend on
policy, load and time, never on data: docs/invisibility.md).  But the counts and budgets
tell who-uses-what-how-much to anyone who reads them, and latencies depend on the work
done; so the endpoint is plaintext HTTP bound to ``127.0.0.1`` by default, and
``check-config`` warns when it listens beyond loopback (docs/operator.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

__all__ = ["BUCKETS", "Metrics", "family", "sample"]

#: Upper bounds of the call-duration histogram, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PREFIX = "datafed_node_"


class Metrics:
    """The counters and histograms of one node (thread-safe); gauges are read at scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.records: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._buckets: defaultdict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sums: defaultdict[str, float] = defaultdict(float)
        self._counts: defaultdict[str, int] = defaultdict(int)
        self.started = time.time()

    def call(self, method: str, code: str, seconds: float) -> None:
        """Count one finished call of ``method`` (``/pkg.Service/Method``) and its duration."""
        name = method.rsplit(".", 1)[-1]  # "QueryService/Query"
        with self._lock:
            self.calls[name, code] += 1
            buckets = self._buckets[name]
            for i, upper in enumerate(BUCKETS):
                if seconds <= upper:
                    buckets[i] += 1
            self._sums[name] += seconds
            self._counts[name] += 1

    def record(self, operation: str, decision: str) -> None:
        """Count one ledger entry appended by this process."""
        with self._lock:
            self.records[operation, decision] += 1

    def counters(self) -> Iterator[str]:
        """The counter and histogram lines, in exposition format."""
        with self._lock:
            yield from family("calls_total", "counter", "gRPC calls finished, by final status")
            for (method, code), n in sorted(self.calls.items()):
                yield sample("calls_total", {"method": method, "code": code}, n)
            yield from family(
                "ledger_records_total", "counter", "ledger entries appended by this process"
            )
            for (op, decision), n in sorted(self.records.items()):
                yield sample("ledger_records_total", {"operation": op, "decision": decision}, n)
            yield from family("call_duration_seconds", "histogram", "gRPC call durations")
            for method in sorted(self._counts):
                for upper, n in zip(BUCKETS, self._buckets[method], strict=True):
                    labels = {"method": method, "le": repr(upper)}
                    yield sample("call_duration_seconds_bucket", labels, n)
                labels = {"method": method, "le": "+Inf"}
                yield sample("call_duration_seconds_bucket", labels, self._counts[method])
                yield sample("call_duration_seconds_sum", {"method": method}, self._sums[method])
                yield sample(
                    "call_duration_seconds_count", {"method": method}, self._counts[method]
                )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name: str, labels: dict[str, str], value: float) -> str:
    """One sample line: ``datafed_node_<name>{labels} value``."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    text = repr(float(value)) if not float(value).is_integer() else str(int(value))
    if math.isinf(value):
        text = "+Inf" if value > 0 else "-Inf"
    return f"{_PREFIX}{name}{{{inner}}} {text}" if inner else f"{_PREFIX}{name} {text}"


def family(name: str, kind: str, help_text: str) -> Iterator[str]:
    """The ``# HELP`` and ``# TYPE`` lines of one metric family."""
    yield f"# HELP {_PREFIX}{name} {help_text}"
    yield f"# TYPE {_PREFIX}{name} {kind}"
