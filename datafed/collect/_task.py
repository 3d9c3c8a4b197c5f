"""A collection task as both aggregators and every device see it, and its task ID.

A task fixes the VDAF and its parameters, the Leader and the Helper, the window
length, the minimum batch size, the task's time range and the optional noise the
aggregators add (``docs/collect.md``). Both aggregators declare it in their own
``node.toml``; its **task ID** is SHA-256 over a canonical encoding of every one of
those parameters, so two aggregators configured differently hold different task
IDs: the VDAF context (``b"datafed-collect/1" || task_id``, see
:class:`datafed.protocols.CollectTask`) and the sealing of the Helper's input share
then differ, and every report fails at the Helper instead of being aggregated under
parameters one side did not agree to. A device computes the ID itself from the
parameters the Leader sends it, so it shards and seals under exactly those.

What a node keeps to itself (who may upload or collect, budgets, job sizes) is
policy, not part of the task, and not digested.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

from datafed.protocols import (
    CollectTask,
    Prio3,
    Prio3Count,
    Prio3Histogram,
    Prio3MultihotCountVec,
    Prio3Sum,
    Prio3SumVec,
)

__all__ = ["VDAFS", "DpSpec", "TaskSpec"]

VdafName = Literal["count", "sum", "sumvec", "histogram", "multihotcountvec"]
#: The Prio3 variants a task may use (draft-irtf-cfrg-vdaf-20 §7.4).
VDAFS: tuple[VdafName, ...] = ("count", "sum", "sumvec", "histogram", "multihotcountvec")
_TAG = b"datafed/collect/task/v1\x00"


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">I", len(raw)) + raw


def _int(v: int | None) -> bytes:
    # -1 never occurs as a parameter, so it can stand for "absent".
    return struct.pack(">q", -1 if v is None else v)


def _float(v: float | None) -> bytes:
    return struct.pack(">d", -1.0 if v is None else float(v))


@dataclass(frozen=True)
class DpSpec:
    """Noise each aggregator adds to its aggregate share at every release.

    Each aggregator adds noise calibrated to give the whole guarantee **alone**, so the
    release stays private if the other aggregator adds none (it colludes with the
    collector). The unit of privacy is one device's contributions to one window: up to
    ``contributions`` reports.

    Attributes
    ----------
    mechanism : {"laplace", "gaussian"}
        Discrete Laplace with epsilon-DP, or discrete Gaussian with rho-zCDP
        (Canonne, Kamath and Steinke 2020; exact samplers in :mod:`datafed.hazmat`).
    epsilon : float or None
        Laplace: epsilon per release.
    rho : float or None
        Gaussian: rho per release (zCDP).
    delta : float
        Gaussian: the delta at which the release is charged as (epsilon, delta)-DP.
    contributions : int
        Most reports one device contributes to one window.
    """

    mechanism: Literal["laplace", "gaussian"]
    epsilon: float | None = None
    rho: float | None = None
    delta: float = 1e-9
    contributions: int = 1

    def __post_init__(self) -> None:
        if self.mechanism == "laplace" and not (self.epsilon and self.epsilon > 0):
            raise ValueError("laplace noise needs epsilon > 0")
        if self.mechanism == "gaussian" and not (self.rho and self.rho > 0):
            raise ValueError("gaussian noise needs rho > 0")
        if not 0 < self.delta < 1 or self.contributions < 1:
            raise ValueError("delta must be in (0, 1) and contributions at least 1")

    @property
    def epsilon_charged(self) -> float:
        """Epsilon one release spends (Gaussian: rho + 2 sqrt(rho ln 1/delta), Bun-Steinke 2016)."""
        if self.mechanism == "laplace":
            assert self.epsilon is not None
            return self.epsilon
        assert self.rho is not None
        return self.rho + 2 * math.sqrt(self.rho * math.log(1 / self.delta))


@dataclass(frozen=True)
class TaskSpec:
    """A collection task's public parameters (see module docs).

    Attributes
    ----------
    name : str
        The task's name, as configured (also its ledger dataset).
    vdaf : str
        One of :data:`VDAFS`.
    max_measurement, length, max_weight, chunk_length : int or None
        The variant's parameters (``sum``/``sumvec``: ``max_measurement``; ``sumvec``,
        ``histogram``, ``multihotcountvec``: ``length``; ``multihotcountvec``:
        ``max_weight``; ``chunk_length`` optional).
    leader, helper : str
        The two aggregator nodes.
    time_precision : int
        Window length in seconds.
    min_batch_size : int
        Fewest verified reports a window needs to be released.
    start, end : int or None
        The task's time range ``[start, end)`` in seconds since the epoch.
    max_skew : int
        How far ahead of an aggregator's clock a report's time may be.
    dp : DpSpec or None
        Noise added by the aggregators at release.
    """

    name: str
    vdaf: str
    leader: str
    helper: str
    time_precision: int
    min_batch_size: int
    max_measurement: int | None = None
    length: int | None = None
    max_weight: int | None = None
    chunk_length: int | None = None
    start: int | None = None
    end: int | None = None
    max_skew: int = 60
    dp: DpSpec | None = None

    def __post_init__(self) -> None:
        if self.vdaf not in VDAFS:
            raise ValueError(f"unknown VDAF {self.vdaf!r}; known: {', '.join(VDAFS)}")
        if self.leader == self.helper:
            raise ValueError("the leader and the helper must be different nodes")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("the task's end must be after its start")
        self.make_vdaf()  # fails on bad parameters now, not at the first report

    def make_vdaf(self) -> Prio3[Any, Any]:
        """A fresh instance of the task's Prio3 variant (raises ValueError on bad parameters)."""

        def need(value: int | None, what: str) -> int:
            if value is None or value < 1:
                raise ValueError(f"vdaf {self.vdaf!r} needs {what} >= 1")
            return value

        chunk = self.chunk_length
        if self.vdaf == "count":
            return Prio3Count()
        if self.vdaf == "sum":
            return Prio3Sum(need(self.max_measurement, "max_measurement"))
        length = need(self.length, "length")
        if self.vdaf == "sumvec":
            return Prio3SumVec(length, need(self.max_measurement, "max_measurement"), chunk)
        if self.vdaf == "histogram":
            return Prio3Histogram(length, chunk)
        return Prio3MultihotCountVec(length, need(self.max_weight, "max_weight"), chunk)

    def encode(self) -> bytes:
        """The canonical encoding the task ID digests (every field, fixed order)."""
        dp = self.dp
        out = [_TAG, _str(self.name), _str(self.vdaf), _str(self.leader), _str(self.helper)]
        out += [_int(v) for v in (self.time_precision, self.min_batch_size, self.max_measurement)]
        out += [_int(v) for v in (self.length, self.max_weight, self.chunk_length)]
        out += [_int(self.start), _int(self.end), _int(self.max_skew)]
        if dp is None:
            out.append(b"\x00")
        else:
            out += [b"\x01", _str(dp.mechanism), _float(dp.epsilon), _float(dp.rho)]
            out += [_float(dp.delta), _int(dp.contributions)]
        return b"".join(out)

    @cached_property
    def task_id(self) -> bytes:
        """32-byte SHA-256 of :meth:`encode`."""
        return hashlib.sha256(self.encode()).digest()

    def collect_task(self) -> CollectTask:
        """The in-memory task of :mod:`datafed.protocols` (VDAF context bound to the ID)."""
        return CollectTask(
            self.task_id,
            self.make_vdaf(),
            self.time_precision,
            self.min_batch_size,
            self.start,
            self.end,
            self.max_skew,
        )

    @property
    def vector(self) -> bool:
        """Whether the aggregate is a vector (else one integer)."""
        return self.vdaf not in ("count", "sum")

    def sensitivity(self) -> tuple[Fraction, Fraction]:
        """``(L1, L2^2)`` change of the aggregate when one device's reports are added or removed."""
        c = self.dp.contributions if self.dp is not None else 1
        m, n, w = self.max_measurement or 1, self.length or 1, self.max_weight or 1
        l1, l2sq = {
            "count": (1, 1),
            "sum": (m, m * m),
            "sumvec": (n * m, n * m * m),
            "histogram": (1, 1),
            "multihotcountvec": (w, w),
        }[self.vdaf]
        return Fraction(c * l1), Fraction(c * c * l2sq)

    def noise_scale(self) -> tuple[str, Fraction] | None:
        """``("laplace", scale)`` or ``("gaussian", sigma^2)`` per element, or ``None``."""
        if self.dp is None:
            return None
        l1, l2sq = self.sensitivity()
        if self.dp.mechanism == "laplace":
            assert self.dp.epsilon is not None
            return "laplace", l1 / Fraction(repr(self.dp.epsilon))
        assert self.dp.rho is not None
        return "gaussian", l2sq / (2 * Fraction(repr(self.dp.rho)))

    def noise_stddev(self) -> float:
        """Standard deviation of one aggregator's noise per element (0 without noise)."""
        scale = self.noise_scale()
        if scale is None:
            return 0.0
        kind, value = scale
        return math.sqrt(2) * float(value) if kind == "laplace" else math.sqrt(float(value))
