"""Training's releases: what leaves an agency in a training job, and what each one costs.

The agency's ClientApp calls these for what leaves (:mod:`nodes.fl.mods`,
:mod:`nodes.fl.client_app`); the node's TrainingService calls them for what a job and
each round cost and whether a round may leave at all (:mod:`nodes.fl.servicer`), and
charges that cost to the node's one accountant before anything leaves. On a job with
differential privacy (required by a dataset with a DP policy):

**An update** (fit): the difference between the model trained locally and the model
received is clipped to the job's ``clipping_norm`` ``C`` in L2 (non-finite coordinates
count as 0), then Gaussian noise ``N(0, sigma^2)`` is added to every coordinate with
``sigma = 2C * sqrt(2 ln(1.25/delta)) / epsilon``: any two clipped updates differ by at
most ``2C`` in L2, whatever rows of the node's data changed (one person or all), so the
update is ``(epsilon, delta)``-DP for ``epsilon < 1`` (Dwork and Roth 2014, Theorem
A.1). Its weight (``num_examples``) is a constant (:func:`fit_weight`) and it carries no
metrics: the training loss and the row count are data. Cost: ``(epsilon, delta)``.

**An evaluation**: on a dataset whose DP policy does not allow it (``allow_evaluation``,
default ``false``) it is refused before the model is even run. Otherwise each row gives
its loss, clipped to ``[0, L]`` (``evaluation_loss_bound``; a non-finite loss counts as
``L``), and whether it was classified right (0 or 1); three sums leave -- rows, clipped
loss (in fixed point, ``2^-16``), right rows -- each with exact discrete Laplace noise
(Canonne, Kamath and Steinke 2020) at ``epsilon/3``: adding or removing one row moves them
by at most 1, ``L`` and 1. The loss and accuracy sent are their ratios, clamped to their
ranges, and ``num_examples`` the noisy row count (at least 1): post-processing. Whatever
weights the analyst sends, a row's loss stays in ``[0, L]`` and its correctness in
``{0, 1}``, so the model chosen changes nothing in the guarantee. Cost: ``(epsilon, 0)``
with the job's ``epsilon_per_round``.

**The open reply** carries no row count under DP (:func:`open_reply_rows`).

**The rows** go to the node's own SuperNode only (:func:`training_rows` reads them after
admission). On exact data too few rows (``min_group_size``) or a value that is not a
number is refused; under DP nothing is refused on the rows -- a refusal would tell whether
a row exists -- rows with a value that is not a finite number are left out, each on its
own, and few rows or none are trained on all the same.

Without DP (an exact dataset, a job without DP) updates and metrics leave as computed.
Composition over rounds is basic: a job of ``r`` rounds spends at most ``r`` times the
round's cost for its updates, and as much again if every round is evaluated.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from datafed.fl.spec import EVALUATION_LOSS_BOUND, DpParams, TrainingGrant, TrainingSpec
from datafed.hazmat import RandomSource, sample_discrete_laplace
from nodes.config import DatasetPolicy
from nodes.errors import InvalidRequest, PermissionDenied

__all__ = [
    "FIXED_BITS",
    "EvaluationRelease",
    "RowReader",
    "clip_update",
    "evaluation_terms",
    "fit_weight",
    "job_cost",
    "open_reply_rows",
    "release_evaluation",
    "release_update",
    "round_cost",
    "training_rows",
    "update_sigma",
]

Array = npt.NDArray[np.generic]
Floats = npt.NDArray[np.float64]
#: Fractional bits of the evaluation loss sum (fixed point, as queries).
FIXED_BITS = 16
_COMPONENTS = 3  # rows, clipped loss, right rows


def update_sigma(dp: DpParams) -> float:
    """Standard deviation of the noise on each coordinate of an update (see module docs)."""
    sensitivity = 2.0 * dp.clipping_norm
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / dp.delta)) / dp.epsilon_per_round


def clip_update(received: Sequence[Array], trained: Sequence[Array], clip: float) -> list[Floats]:
    """The update ``trained - received``, its non-finite coordinates 0, clipped to ``clip``.

    Raises
    ------
    ValueError
        If the two models' arrays do not have the same shapes.
    """
    if len(received) != len(trained):
        raise ValueError("the trained model has another number of arrays than the received one")
    diffs: list[Floats] = []
    for before, after in zip(received, trained, strict=True):
        a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
        if a.shape != b.shape:
            raise ValueError("the trained model's arrays differ in shape from the received ones")
        diffs.append(np.nan_to_num(b - a, nan=0.0, posinf=0.0, neginf=0.0))
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in diffs))
    if norm > clip:
        diffs = [d * (clip / norm) for d in diffs]
    return diffs


def release_update(
    received: Sequence[Array],
    trained: Sequence[Array],
    dp: DpParams,
    rng: np.random.Generator | None = None,
) -> list[npt.NDArray[np.float32]]:
    """The model that leaves after a fit: ``received`` + the clipped, noised update.

    Without DP, ``trained`` as it is. ``rng``: tests only (default: seeded from the OS).
    """
    if not dp.enabled:
        return [np.asarray(t, np.float32) for t in trained]
    gen = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    sigma = update_sigma(dp)
    diffs = clip_update(received, trained, dp.clipping_norm)
    return [
        (np.asarray(r, np.float64) + d + gen.normal(0.0, sigma, d.shape)).astype(np.float32)
        for r, d in zip(received, diffs, strict=True)
    ]


def fit_weight(dp: DpParams, rows: int, constant: int) -> int:
    """A fit's ``num_examples``: the rows without DP, under DP the job's ``constant``.

    The constant (the run's SecAgg+ maximum weight) is the same at every node, so FedAvg
    averages the nodes' updates equally and SecAgg+ quantises them at full precision.
    """
    return max(1, int(constant)) if dp.enabled else rows


@dataclass(frozen=True)
class EvaluationRelease:
    """What leaves from one evaluation under DP: three noisy sums (see module docs)."""

    rows: int
    loss_sum: float
    right: int
    loss_bound: float

    @property
    def num_examples(self) -> int:
        """The noisy row count, at least 1 (the weight of this node's metrics)."""
        return max(1, self.rows)

    @property
    def loss(self) -> float:
        """Mean clipped loss: the noisy sum over the noisy count, within ``[0, L]``."""
        return min(max(self.loss_sum / self.num_examples, 0.0), self.loss_bound)

    @property
    def accuracy(self) -> float:
        """Noisy right rows over the noisy count, within ``[0, 1]``."""
        return min(max(self.right / self.num_examples, 0.0), 1.0)


def release_evaluation(
    losses: npt.ArrayLike,
    right: npt.ArrayLike,
    epsilon: float,
    loss_bound: float,
    rng: RandomSource | None = None,
) -> EvaluationRelease:
    """Release one evaluation under DP from each row's loss and correctness.

    Parameters
    ----------
    losses
        Each row's loss (any float; clipped here).
    right
        Each row's correctness (true where positive).
    epsilon
        The evaluation's epsilon (the job's ``epsilon_per_round``), split over three sums.
    loss_bound
        ``L``: each row's loss is clipped to ``[0, L]``.
    rng
        Tests only (default: the OS CSPRNG).
    """
    per_row = np.asarray(losses, np.float64).reshape(-1)
    hits = np.asarray(right).reshape(-1)
    if per_row.shape != hits.shape:
        raise ValueError("one loss and one correctness per row")
    unit = 1 << FIXED_BITS
    bound = math.ceil(Fraction(repr(float(loss_bound))) * unit)
    clipped = np.nan_to_num(per_row, nan=loss_bound, posinf=loss_bound, neginf=0.0)
    fixed = np.minimum(np.rint(np.clip(clipped, 0.0, loss_bound) * unit), bound)
    eps = Fraction(repr(float(epsilon))) / _COMPONENTS
    rows = len(per_row) + sample_discrete_laplace(1 / eps, rng)
    total = int(fixed.sum()) + sample_discrete_laplace(bound / eps, rng)
    good = int(np.count_nonzero(hits > 0)) + sample_discrete_laplace(1 / eps, rng)
    return EvaluationRelease(rows, total / unit, good, float(loss_bound))


def evaluation_terms(policy: DatasetPolicy) -> tuple[bool, float]:
    """``(refused, loss bound)`` of evaluation under DP on a dataset (for the grant)."""
    dp = policy.dp
    if dp is None:
        return False, EVALUATION_LOSS_BOUND
    return not dp.allow_evaluation, dp.evaluation_loss_bound


def job_cost(spec: TrainingSpec) -> tuple[float, float]:
    """``(epsilon, delta)`` the job's updates spend at one node in all (checked at open)."""
    return spec.epsilon_total, spec.delta_total


def round_cost(spec: TrainingSpec, phase: str, policy: DatasetPolicy) -> tuple[float, float]:
    """``(epsilon, delta)`` one round's release costs, or the refusal of an evaluation.

    Raises
    ------
    PermissionDenied
        For an evaluation of a dataset whose DP policy does not allow it: decided on the
        policy alone, before anything is charged or leaves.
    """
    dp = spec.dp
    if phase == "evaluate":
        if evaluation_terms(policy)[0]:
            raise PermissionDenied(
                f"dataset {spec.dataset!r} does not allow federated evaluation under "
                "differential privacy (allow_evaluation)"
            )
        return (dp.epsilon_per_round, 0.0) if dp.enabled else (0.0, 0.0)
    return (dp.epsilon_per_round, dp.delta) if dp.enabled else (0.0, 0.0)


def open_reply_rows(grant: TrainingGrant) -> dict[str, int]:
    """What the ClientApp's open reply may say about the node's rows: nothing under DP."""
    return {} if grant.spec.dp.enabled else {"num-rows": grant.num_rows}


class RowReader(Protocol):
    """The node's store, as :func:`training_rows` reads it (:class:`nodes.stores.DataStore`)."""

    def read_rows(self, dataset: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row's values of ``columns``."""
        ...


def training_rows(
    store: RowReader, spec: TrainingSpec, policy: DatasetPolicy
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The granted rows as ``(features, labels)``, read after admission (see module docs).

    Raises
    ------
    PermissionDenied, InvalidRequest
        Exact data only: fewer than ``min_group_size`` rows, a value that is not a number.
    """
    rows = store.read_rows(spec.dataset, spec.columns)
    width = len(spec.columns)
    if spec.dp.enabled or policy.dp is not None:
        kept = [v for v in map(_numeric, rows) if v is not None]
        data = np.asarray(kept, dtype=np.float64).reshape(len(kept), width)
    else:
        if len(rows) < policy.min_group_size:
            raise PermissionDenied(
                f"dataset {spec.dataset!r} has fewer than {policy.min_group_size} rows"
            )
        bad = _first_bad_column(rows, spec.columns)
        if bad is not None:
            raise InvalidRequest(
                f"training column {bad!r} of {spec.dataset!r} holds a NULL or a value that is "
                "not a finite number: exact training uses every row, so the column must be "
                "complete (fill or impute it at import, or train with DP, which leaves "
                "incomplete rows out; docs/training.md)"
            )
        data = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    return data[:, :-1].copy(), data[:, -1].copy()


def _first_bad_column(rows: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> str | None:
    """The first of ``columns`` (in the job's order) with a NULL or non-finite value."""
    bad: set[int] = set()
    for row in rows:
        for k, v in enumerate(row):
            if k not in bad and not _finite(v):
                bad.add(k)
    return columns[min(bad)] if bad else None


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _numeric(row: tuple[Any, ...]) -> list[float] | None:
    """``row`` as finite floats, or ``None``."""
    try:
        values = [float(v) for v in row]
    except (TypeError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values) else None
