"""Domain types of a training job: what is asked, what a node grants, what a round records.

These are plain, validated dataclasses; :mod:`datafed.fl.serde` converts them to and from
the wire messages of ``training.proto``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BUILTIN_MODEL",
    "PHASES",
    "DpParams",
    "RoundEntry",
    "TrainingGrant",
    "TrainingSpec",
    "check_model_ref",
    "is_builtin_model",
    "model_allowed",
]

#: Round phases a node records: an update leaves ("fit") or metrics leave ("evaluate").
PHASES = ("fit", "evaluate")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# The same identifier rule as queries (datafed.query.spec), kept here so the ClientApp,
# which starts as a fresh process for every Flower message, need not import the SQL layer.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_ROUNDS = 1000
MAX_FEATURES = 256
#: The built-in tabular MLP: ``"mlp:16"`` (one hidden layer of 16), ``"mlp:32,16"``, ``"mlp:"``.
BUILTIN_MODEL = "mlp"
_BUILTIN_REF = re.compile(r"mlp:[0-9,]{0,64}")
# ``package.module:factory`` -- an importable torch.nn.Module factory (as flwr's
# ``module:attr`` component references are written).
_FACTORY_REF = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
MAX_MODEL_REF = 200
#: Evaluation under DP: each row's loss is clipped to ``[0, bound]`` (a node's policy may
#: set another, ``evaluation_loss_bound``).
EVALUATION_LOSS_BOUND = 2.0


def check_model_ref(model: str) -> str:
    """Return ``model`` if it names the built-in MLP or an importable factory, else raise.

    ``"mlp:H1,H2,..."`` is datafed's tabular MLP; ``"package.module:factory"`` names a
    callable ``factory(n_features) -> torch.nn.Module`` with one output (a logit).
    """
    ok = isinstance(model, str) and len(model) <= MAX_MODEL_REF
    if ok and model.startswith("mlp:"):  # the built-in's name is never a factory's module
        ok = _BUILTIN_REF.fullmatch(model) is not None
    if not ok or not (_BUILTIN_REF.fullmatch(model) or _FACTORY_REF.fullmatch(model)):
        raise ValueError(
            f"model must be 'mlp:16' (widths) or 'package.module:factory', got {model!r}"
        )
    return model


def is_builtin_model(model: str) -> bool:
    """Whether ``model`` names datafed's built-in MLP (``"mlp:..."``)."""
    return _BUILTIN_REF.fullmatch(model) is not None


def model_allowed(model: str, allowed: Sequence[str]) -> bool:
    """Whether a node's ``allowed_models`` admits ``model``.

    ``"mlp"`` admits the built-in MLP at any widths; a factory must be listed exactly
    (``"package.module:factory"``): it is code the node's SuperNode will import and run.
    """
    if _BUILTIN_REF.fullmatch(model):
        return BUILTIN_MODEL in allowed
    return model in allowed


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, underscore), else raise."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"invalid identifier {name!r}: use letters, digits and '_' (max 64)")
    return name


@dataclass(frozen=True)
class DpParams:
    """Local differential privacy on each update (Flower's ``LocalDpMod``).

    The ClientApp clips the update (its difference to the global model) to
    ``clipping_norm`` in L2 and adds Gaussian noise calibrated for
    ``(epsilon_per_round, delta)``-DP with sensitivity ``clipping_norm``; the node charges
    ``epsilon_per_round`` to the requester's privacy budget for the dataset each round.
    """

    enabled: bool = False
    epsilon_per_round: float = 0.0
    delta: float = 0.0
    clipping_norm: float = 0.0

    def __post_init__(self) -> None:
        if not self.enabled:
            if self.epsilon_per_round or self.delta or self.clipping_norm:
                raise ValueError("DP parameters given but DP is not enabled")
            return
        for name in ("epsilon_per_round", "delta", "clipping_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"dp.{name} must be a positive finite number, got {v!r}")
        if self.delta >= 1:
            raise ValueError(f"dp.delta must be below 1, got {self.delta!r}")
        # sigma = sensitivity * sqrt(2 ln(1.25/delta)) / epsilon (Flower's LocalDpMod) is
        # (epsilon, delta)-DP only for epsilon < 1 (Dwork & Roth 2014, Theorem A.1).
        if self.epsilon_per_round >= 1:
            raise ValueError(
                "dp.epsilon_per_round must be below 1 for the Gaussian mechanism "
                f"(Dwork & Roth 2014, Theorem A.1), got {self.epsilon_per_round!r}"
            )

    @classmethod
    def local(
        cls, epsilon_per_round: float, delta: float = 1e-5, clipping_norm: float = 1.0
    ) -> DpParams:
        """DP switched on with the given parameters."""
        return cls(True, float(epsilon_per_round), float(delta), float(clipping_norm))

    def describe(self) -> str:
        """A short human description, as recorded in ledger details."""
        if not self.enabled:
            return "off"
        return (
            f"local-gaussian eps={self.epsilon_per_round:g} delta={self.delta:g} "
            f"clip={self.clipping_norm:g}"
        )


@dataclass(frozen=True)
class TrainingSpec:
    """What the analyst asks to train on at every node."""

    dataset: str
    feature_columns: tuple[str, ...]
    label_column: str
    rounds: int
    dp: DpParams = field(default_factory=DpParams)
    model: str = "mlp:16"
    secagg: bool = True

    def __post_init__(self) -> None:
        check_identifier(self.dataset)
        if not self.feature_columns:
            raise ValueError("feature_columns must name at least one column")
        if len(self.feature_columns) > MAX_FEATURES:
            raise ValueError(
                f"at most {MAX_FEATURES} feature columns, got {len(self.feature_columns)}"
            )
        for c in (*self.feature_columns, self.label_column):
            check_identifier(c)
        if len(set(self.feature_columns)) != len(self.feature_columns):
            raise ValueError("feature_columns must be distinct")
        if self.label_column in self.feature_columns:
            raise ValueError(f"label column {self.label_column!r} is also a feature")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int):
            raise TypeError(f"rounds must be an int, got {type(self.rounds).__name__}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be in [1, {MAX_ROUNDS}], got {self.rounds}")
        check_model_ref(self.model)

    @property
    def protection(self) -> str:
        """How updates leave the node, as the ledger records it: ``fl-secagg`` or ``fl``."""
        return "fl-secagg" if self.secagg else "fl"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the job reads: the features, then the label."""
        return (*self.feature_columns, self.label_column)

    @property
    def epsilon_total(self) -> float:
        """Epsilon the job's updates spend at one node in all (0 without DP).

        Each evaluation, where a node allows it, spends ``epsilon_per_round`` more.
        """
        return self.dp.epsilon_per_round * self.rounds if self.dp.enabled else 0.0

    @property
    def delta_total(self) -> float:
        """Delta the job's updates spend at one node in all (basic composition; 0 without DP)."""
        return self.dp.delta * self.rounds if self.dp.enabled else 0.0


@dataclass(frozen=True)
class TrainingGrant:
    """A node's approval of a job: the spec it enforces and the rows it will serve.

    It goes to the node's own SuperNode only (which receives the rows anyway); what the
    ClientApp tells the analyst's ServerApp leaves through :mod:`nodes.release.training`.
    ``evaluation_refused``: the dataset's DP policy does not allow federated evaluation;
    ``evaluation_loss_bound``: under DP, each row's loss is clipped to ``[0, bound]``.
    """

    node: str
    job_id: str
    spec: TrainingSpec
    num_rows: int
    request_sha256: str
    evaluation_refused: bool = False
    evaluation_loss_bound: float = EVALUATION_LOSS_BOUND

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.request_sha256):
            raise ValueError("request_sha256 must be 64 lowercase hex digits")
        if self.num_rows < 0:
            raise ValueError(f"num_rows must be >= 0, got {self.num_rows}")
        bound = self.evaluation_loss_bound
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"evaluation_loss_bound must be positive, got {bound!r}")


@dataclass(frozen=True)
class RoundEntry:
    """One round at one node, as the ClientApp asks its node to record it."""

    job_id: str
    round: int
    phase: str
    model_in_sha256: str
    update_out_sha256: str
    num_examples: int
    secagg: bool

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if not 0 <= self.round <= MAX_ROUNDS:
            raise ValueError(f"round must be in [0, {MAX_ROUNDS}], got {self.round}")
        for name in ("model_in_sha256", "update_out_sha256"):
            if not _HEX64.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be 64 lowercase hex digits")
        if not self.job_id or len(self.job_id) > 128:
            raise ValueError("job_id must be 1-128 characters")
        if self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")
