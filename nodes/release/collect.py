"""Collection's releases: one closed window's aggregate share, its facts, and their cost.

Each aggregator answers a collector with its own aggregate share of a closed window
(:mod:`nodes.collect.release`) and writes the window's close entry
(:mod:`nodes.collect.entries`); both go through these functions. On a task with
``[collect.dp]``:

* **the share** (:func:`release_share`): a fresh draw per element -- discrete Laplace with
  scale ``Delta1 / epsilon`` or discrete Gaussian with variance ``Delta2^2 / (2 rho)``
  (the exact samplers of :mod:`datafed.hazmat`) -- calibrated so that this aggregator's
  draw alone gives the whole guarantee, even if the other adds none;
* **the window's facts** are data too: its report count, rejected count and rejections
  by reason leave the node only in the close entry's private part (auditors); the
  collector gets 0 and none (:func:`released_facts`). Whether the window reached
  ``min_batch_size`` is no reason to refuse it (a refusal on the exact count would tell
  whether one device reported; the noise protects small windows): every closed window may
  be released (:func:`releasable`);
* **the digest of the un-noised share** is not shown to the collector -- with its noisy
  share, a search over the likely noise values would give back the exact share -- so the
  close entry keeps it in its private part, its result digest empty; nor is the window's
  checksum (with it, a search over counts would find the one that hashes to the close
  request's digest, which the collector needs to check the close receipt);
* **cost** (:func:`collect_cost`): Laplace ``(epsilon, 0)``; Gaussian
  ``(rho + 2 sqrt(rho ln(1/delta)), delta)`` (Bun and Steinke 2016, Proposition 1.3), per
  release, charged by the node's one accountant at admission (``budget_epsilon``,
  ``budget_delta`` of the task).

Without DP a task behaves as DAP: exact counts, windows under ``min_batch_size`` never
released, share digests public.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from datafed.collect import TaskSpec
from datafed.hazmat import RandomSource, sample_discrete_gaussian, sample_discrete_laplace

__all__ = [
    "WindowFacts",
    "WindowRow",
    "close_entry",
    "collect_cost",
    "releasable",
    "release_share",
    "released_facts",
]


class WindowRow(Protocol):
    """What these functions read of a stored window (:class:`nodes.collect.windows.WindowRow`)."""

    @property
    def count(self) -> int:
        """Verified reports aggregated."""
        ...

    @property
    def rejected_count(self) -> int:
        """Reports rejected."""
        ...

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rejections by reason."""
        ...

    @property
    def share_digest(self) -> str:
        """SHA-256 of the un-noised aggregate share."""
        ...

    @property
    def checksum(self) -> bytes:
        """XOR of the SHA-256 of the window's report IDs."""
        ...

    @property
    def releasable(self) -> bool:
        """Whether it reached ``min_batch_size``."""
        ...


def release_share(
    spec: TaskSpec, vdaf: Any, agg: list[int], rng: RandomSource | None = None
) -> bytes:
    """This aggregator's encoded aggregate share, a fresh draw added per element under DP.

    ``vdaf`` is the task's Prio3 instance; ``rng``: tests only (default: the OS CSPRNG).
    """
    scale = spec.noise_scale()
    if scale is not None:
        kind, value = scale
        draw = sample_discrete_laplace if kind == "laplace" else sample_discrete_gaussian
        p = vdaf.field.MODULUS
        agg = [(x + draw(value, rng)) % p for x in agg]
    encoded: bytes = vdaf.encode_agg_share(agg)
    return encoded


def collect_cost(spec: TaskSpec) -> tuple[float, float]:
    """``(epsilon, delta)`` one release of a window costs (0 without noise)."""
    dp = spec.dp
    if dp is None:
        return 0.0, 0.0
    return dp.epsilon_charged, (dp.delta if dp.mechanism == "gaussian" else 0.0)


def releasable(spec: TaskSpec, row: WindowRow) -> bool:
    """Whether a closed window may be released: always under DP, else ``min_batch_size``."""
    return spec.dp is not None or row.releasable


@dataclass(frozen=True)
class WindowFacts:
    """What a collector is told about a window besides its share."""

    report_count: int
    rejected_count: int
    rejected: Mapping[str, int]
    share_digest: str
    checksum: bytes


def released_facts(spec: TaskSpec, row: WindowRow) -> WindowFacts:
    """The window's counts, checksum and share digest as they may leave: none under DP."""
    if spec.dp is not None:
        return WindowFacts(0, 0, {}, "", b"")
    return WindowFacts(
        row.count, row.rejected_count, dict(row.rejected), row.share_digest, row.checksum
    )


def close_entry(
    spec: TaskSpec, facts: Mapping[str, str], share_digest: str, reason: str
) -> tuple[dict[str, str], dict[str, str] | None, str, str]:
    """Split a close entry: ``(public details, private part, result digest, reason)``.

    ``facts`` are the window's data-dependent details (counts, rejections); under DP
    they go to the private part with the share digest, and the reason names none.
    """
    if spec.dp is None:
        return dict(facts), None, share_digest, reason
    private = {**facts, "share_digest": share_digest}
    return {}, private, "", f"window of {spec.name} closed (its counts are private under DP)"
