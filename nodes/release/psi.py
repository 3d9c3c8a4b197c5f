"""Intersection-sum's releases: what each side lets leave, and the noise the ids node adds.

The mechanism is :mod:`datafed.psi._dp`'s; the node's PsiService (:mod:`nodes.psi.servicer`)
calls these functions for every value of an intersection-sum that depends on its rows:

* the **values side** (:func:`values_side`): under DP each identifier's summed value is
  clamped to the policy's bounds for the value column (sensitivity ``B``), and the node
  states ``B`` and its epsilon for the ids node; it states no minimum intersection size;
* the **ids side** (:func:`ids_noise`, :func:`draw`): exact discrete Laplace noise on the
  sum (added under the analyst's Paillier key, so the node never sees the sum) and on the
  intersection size, each at ``epsilon / 2`` with ``epsilon`` the smaller of the DP nodes'
  epsilons; the released size is ``max(0, size + noise)`` (post-processing). Adding or
  removing one identifier on either side moves the size by at most 1 and the sum by at
  most ``B``, so the release is ``epsilon``-DP for every DP node's rows.

Under DP no refusal depends on the rows: neither side applies its ``min_group_size`` to
the intersection (:func:`ids_min_intersection`): a refusal on the exact size would tell
whether one identifier is in it, and the noise protects a small intersection. Exact
datasets (no DP anywhere) keep the minimum. Cost: each DP node charges its own
``epsilon_per_query`` (delta 0) at admission, through the node's one accountant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from datafed.hazmat import RandomSource
from datafed.psi import (
    DpNoise,
    PsiJob,
    StatementBody,
    clamp_pairs,
    fixed_bound,
    identifier_set,
    value_pairs,
)
from nodes.config import DatasetPolicy, DpPolicy
from nodes.errors import InvalidRequest, PermissionDenied

__all__ = [
    "IntersectionRelease",
    "RowReader",
    "draw",
    "ids_min_intersection",
    "ids_noise",
    "noise_for",
    "read_identifiers",
    "read_values",
    "values_side",
]

Pairs = list[tuple[bytes, int]]


class RowReader(Protocol):
    """The node's store, as these functions read it (:class:`nodes.stores.DataStore`)."""

    def read_rows(self, dataset: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row's values of ``columns``."""
        ...


def read_identifiers(store: RowReader, job: PsiJob) -> list[bytes]:
    """The ids side's identifiers (the dataset read, after admission)."""
    rows = store.read_rows(job.ids.dataset, [job.ids.column])
    return identifier_set(r[0] for r in rows)


def read_values(
    store: RowReader, job: PsiJob, policy: DatasetPolicy
) -> tuple[Pairs, dict[str, Any], int]:
    """The values side's pairs as they may leave (:func:`values_side`), read after admission."""
    side = job.values
    rows = store.read_rows(side.dataset, [side.id_column, side.value_column])
    bits = job.fixed_point_bits
    return values_side(value_pairs(rows, bits), policy, side.value_column, bits)


def values_side(
    pairs: Pairs, policy: DatasetPolicy, column: str, bits: int
) -> tuple[Pairs, dict[str, Any], int]:
    """What the values node seals: its pairs (clamped under DP), what it states, its minimum.

    Returns ``(pairs, stated, min_intersection)``: ``stated`` are the DP fields of its
    exchange statement (``dp_sensitivity``, ``dp_epsilon``), empty without DP.
    """
    dp = policy.dp
    if dp is None:
        return pairs, {}, policy.min_group_size
    bounds = dp.bounds[column]
    stated = {"dp_sensitivity": fixed_bound(bounds, bits), "dp_epsilon": repr(dp.epsilon_per_query)}
    return clamp_pairs(pairs, bounds, bits), stated, 0


def ids_noise(dp: DpPolicy | None, peer: StatementBody, dataset: str) -> DpNoise | None:
    """The noise the ids node adds: calibrated to the smaller of the two nodes' epsilons.

    ``peer`` is the values node's verified statement (its ``dp_sensitivity`` and
    ``dp_epsilon``; see :func:`noise_for`).
    """
    return noise_for(dp, peer.dp_sensitivity, peer.dp_epsilon, dataset)


def noise_for(dp: DpPolicy | None, sensitivity: int, stated: str, dataset: str) -> DpNoise | None:
    """The ids node's noise for a values node that stated ``sensitivity`` and ``stated``.

    Raises
    ------
    PermissionDenied
        The ids dataset has DP but the values node states no bound (nothing could hide
        one identifier's value).
    InvalidRequest
        The values node stated an epsilon outside ``(0, 10]``.
    """
    if not sensitivity:
        if dp is not None:
            raise PermissionDenied(
                f"dataset {dataset!r} requires differential privacy but the values node "
                "states no bound on its values; intersection_sum is refused"
            )
        return None
    try:
        theirs = Fraction(stated)
        if not 0 < theirs <= 10:
            raise ValueError
    except (ValueError, ZeroDivisionError) as exc:
        raise InvalidRequest("the values node stated an invalid epsilon") from exc
    eps = min(theirs, Fraction(repr(dp.epsilon_per_query))) if dp is not None else theirs
    return DpNoise(str(eps), sensitivity)


def ids_min_intersection(policy: DatasetPolicy, noise: DpNoise | None) -> int:
    """The ids node's minimum intersection size: none under DP (see module docs)."""
    return 0 if noise is not None else policy.min_group_size


@dataclass(frozen=True)
class IntersectionRelease:
    """One release's noise: the sum's (added under encryption) and the size's."""

    sum_noise: int = 0
    size_noise: int = 0

    def size(self, exact: int) -> int:
        """The size that leaves: ``max(0, exact + noise)`` (exact without DP)."""
        return max(0, exact + self.size_noise)


def draw(noise: DpNoise | None, rng: RandomSource | None = None) -> IntersectionRelease:
    """Fresh noise for one release (none without DP); ``rng``: tests only."""
    if noise is None:
        return IntersectionRelease()
    return IntersectionRelease(*noise.draw(rng))
