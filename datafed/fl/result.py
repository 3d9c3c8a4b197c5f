"""The outcome of a training job, as the ServerApp reports it and ``train()`` returns it.

The ServerApp prints the result as one log line ``DATAFED-FL-RESULT <base64 JSON>`` (and
optionally writes the JSON to a file). ``flwr run --stream`` relays the ServerApp's log to
the analyst, so the result reaches the analyst wherever the SuperLink runs. The final
weights travel with it (the model is small); their digest is the model's name in every
node's ledger.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from datafed.errors import ProtocolError
from datafed.fl.digest import arrays_digest
from datafed.fl.errors import TrainingFailed, TrainingRefused

__all__ = ["RESULT_MARKER", "RoundSummary", "TrainResult", "check_result", "find_result"]

RESULT_MARKER = "DATAFED-FL-RESULT "
MAX_RESULT_BYTES = 8 << 20


@dataclass(frozen=True)
class RoundSummary:
    """One round as the ServerApp saw it (the nodes' ledgers hold the same digests)."""

    round: int
    model_in: str
    model_out: str
    participants: tuple[str, ...]
    num_examples: int
    failures: tuple[str, ...] = ()
    mismatches: tuple[str, ...] = ()
    eval_participants: tuple[str, ...] = ()
    eval_loss: float | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    updates: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundSummary:
        """Build from the ServerApp's JSON."""
        return cls(
            round=int(d["round"]),
            model_in=str(d.get("model_in", "")),
            model_out=str(d.get("model_out", "")),
            participants=tuple(d.get("participants", ())),
            num_examples=int(d.get("num_examples", 0)),
            failures=tuple(d.get("failures", ())),
            mismatches=tuple(d.get("mismatches", ())),
            eval_participants=tuple(d.get("eval_participants", ())),
            eval_loss=d.get("eval_loss"),
            eval_metrics=dict(d.get("eval_metrics", {})),
            updates=dict(d.get("updates", {})),
        )


@dataclass(frozen=True)
class TrainResult:
    """What a training job produced.

    Attributes
    ----------
    job_id : str
        The job's id (in every ledger entry of the job).
    status : str
        ``"completed"``, ``"refused"`` (a node refused; see ``refusals``) or ``"failed"``.
    model_sha256 : str
        Digest of the final global model (:func:`datafed.fl.digest.arrays_digest`);
        ``datafed-audit lineage`` starts from it.
    weights : list[numpy.ndarray]
        The final model's parameters (float32, ``state_dict`` order).
    rounds : tuple[RoundSummary, ...]
        Per round: digests in and out, participants, failures, federated evaluation.
    nodes : dict[str, int]
        Nodes that approved the job and how many rows each trained on (0: not disclosed,
        as under DP).
    refusals : dict[str, str]
        Node -> ``"<STATUS>: <reason>"`` for nodes that refused.
    settings : dict[str, Any]
        The run settings (without the signed requests).
    error : str
        Why a ``"failed"`` job failed.
    """

    job_id: str
    status: str
    model_sha256: str = ""
    weights: list[npt.NDArray[np.float32]] = field(default_factory=list)
    rounds: tuple[RoundSummary, ...] = ()
    nodes: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    error: str = ""

    @property
    def accuracy(self) -> float | None:
        """Federated evaluation accuracy of the final model, if the nodes reported one."""
        return self.rounds[-1].eval_metrics.get("accuracy") if self.rounds else None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (weights as base64 ``.npz``)."""
        buf = io.BytesIO()
        np.savez(buf, *self.weights)
        return {
            "job_id": self.job_id,
            "status": self.status,
            "model_sha256": self.model_sha256,
            "weights_npz": base64.b64encode(buf.getvalue()).decode("ascii") if self.weights else "",
            "rounds": [r.__dict__ for r in self.rounds],
            "nodes": self.nodes,
            "refusals": self.refusals,
            "settings": self.settings,
            "run_id": self.run_id,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainResult:
        """Rebuild from :meth:`to_json` output; the weights must match ``model_sha256``.

        Raises
        ------
        ProtocolError
            If fields are missing or the weights do not hash to the stated digest.
        """
        try:
            weights: list[npt.NDArray[np.float32]] = []
            if d.get("weights_npz"):
                raw = base64.b64decode(d["weights_npz"], validate=True)
                with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                    weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
            result = cls(
                job_id=str(d["job_id"]),
                status=str(d["status"]),
                model_sha256=str(d.get("model_sha256", "")),
                weights=weights,
                rounds=tuple(RoundSummary.from_json(r) for r in d.get("rounds", ())),
                nodes={str(k): int(v) for k, v in d.get("nodes", {}).items()},
                refusals={str(k): str(v) for k, v in d.get("refusals", {}).items()},
                settings=dict(d.get("settings", {})),
                run_id=str(d.get("run_id", "")),
                error=str(d.get("error", "")),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ProtocolError(f"malformed training result: {exc}") from exc
        if result.weights and arrays_digest(result.weights) != result.model_sha256:
            raise ProtocolError("training result weights do not match the stated model digest")
        return result

    def to_line(self) -> str:
        """The one log line the ServerApp prints."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return RESULT_MARKER + base64.b64encode(text.encode("utf-8")).decode("ascii")


def find_result(lines: Iterable[str]) -> TrainResult | None:
    """Return the last result found in log lines (``None`` if there is none)."""
    found: TrainResult | None = None
    for line in lines:
        pos = line.find(RESULT_MARKER)
        if pos < 0:
            continue
        payload = line[pos + len(RESULT_MARKER) :].strip()
        if len(payload) > MAX_RESULT_BYTES:
            raise ProtocolError("training result is too large")
        try:
            data = json.loads(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("training result line is corrupt") from exc
        found = TrainResult.from_json(data)
    return found


def check_result(result: TrainResult | None, output_tail: str = "") -> TrainResult:
    """Return a completed result, or raise what went wrong.

    Raises
    ------
    TrainingRefused
        If nodes refused the job (each node's status and reason).
    TrainingFailed
        If the run failed or produced no result.
    """
    if result is None:
        raise TrainingFailed(
            f"the Flower run ended without a result; its output ends:\n{output_tail}"
        )
    if result.status == "refused":
        raise TrainingRefused(result.refusals)
    if result.status != "completed":
        raise TrainingFailed(f"training job {result.job_id} failed: {result.error}")
    return result
