"""Per-round progress of a training job, from the ServerApp to the analyst's terminal.

The ServerApp prints one ``DATAFED-FL-PROGRESS <json>`` line when the job is opened and
after each round's fit and evaluation; ``flwr run --stream`` relays the ServerApp's log,
so :func:`datafed.fl.training.train` sees the lines as they happen, wherever the SuperLink
runs, and hands each to its ``on_progress`` callback (``datafed train`` prints them).
A line carries only what the analyst's result will hold anyway (names, counts, metrics).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PROGRESS_MARKER", "Progress", "parse_progress"]

PROGRESS_MARKER = "DATAFED-FL-PROGRESS "
_MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class Progress:
    """One step of a job: ``open``, a round's ``fit`` or ``evaluate``."""

    phase: str
    round: int
    rounds: int
    nodes: tuple[str, ...] = ()
    failures: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_line(self) -> str:
        """The log line the ServerApp prints."""
        data = {**asdict(self), "nodes": list(self.nodes)}
        return PROGRESS_MARKER + json.dumps(data, sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        """One human line, e.g. ``round 2/3: 3 node(s) trained (flood-a, ...)``."""
        names = ", ".join(self.nodes)
        lost = f", {self.failures} failed or dropped" if self.failures else ""
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.metrics.items()))
        if self.phase == "open":
            return f"job opened: {len(self.nodes)} node(s) approved ({names}){lost}"
        verb = "trained" if self.phase == "fit" else "evaluated"
        extra = f": {shown}" if shown else ""
        return (
            f"round {self.round}/{self.rounds}: {len(self.nodes)} node(s) {verb} "
            f"({names}){lost}{extra}"
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Progress:
        """Rebuild from :meth:`to_line` JSON; raise ValueError/TypeError if malformed."""
        phase = str(d["phase"])
        if phase not in ("open", "fit", "evaluate"):
            raise ValueError(f"unknown progress phase {phase!r}")
        metrics = {str(k): float(v) for k, v in dict(d.get("metrics", {})).items()}
        return cls(
            phase,
            int(d["round"]),
            int(d["rounds"]),
            tuple(str(n) for n in d.get("nodes", ())),
            int(d.get("failures", 0)),
            metrics,
        )


def parse_progress(line: str) -> Progress | None:
    """Return the progress a log line carries, or ``None`` (also for a corrupt line)."""
    pos = line.find(PROGRESS_MARKER)
    if pos < 0 or len(line) > _MAX_LINE:
        return None
    try:
        return Progress.from_json(json.loads(line[pos + len(PROGRESS_MARKER) :]))
    except (ValueError, TypeError, KeyError):
        return None
