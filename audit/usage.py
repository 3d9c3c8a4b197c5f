"""Data-use summaries and cross-node reconciliation over decoded ledger records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from audit.records import DataUseRecord

__all__ = ["UsageRow", "reconcile", "summarize"]

_AGREE = ("requester", "purpose", "legal_basis", "protection")
_JOB_DETAILS = ("dp", "rounds_approved", "secagg")  # FL job parameters: equal at every node
_ROUND_DETAILS = ("model_in",)  # per (round, phase): every node trained the same global model


@dataclass
class UsageRow:
    """Counts per decision and epsilon spent for one group key."""

    key: str
    entries: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    epsilon: float = 0.0


def summarize(records: Iterable[DataUseRecord], by: str) -> list[UsageRow]:
    """Group records by field ``by`` (requester, dataset, purpose, node, ...); sorted by key.

    Epsilon counts only for ``approved``/``released`` entries (a denial spends nothing).
    """
    if by not in DataUseRecord.__dataclass_fields__ or by == "details":
        raise ValueError(f"cannot group by {by!r}")
    rows: dict[str, UsageRow] = {}
    for r in records:
        key = str(getattr(r, by))
        row = rows.setdefault(key, UsageRow(key))
        row.entries += 1
        row.decisions[r.decision] += 1
        if r.decision == "released":
            row.epsilon += r.epsilon
    return [rows[k] for k in sorted(rows)]


def reconcile(job_id: str, logs: Mapping[str, Sequence[DataUseRecord]]) -> list[str]:
    """Check that every node in a job holds matching records; return named problems.

    Parameters
    ----------
    job_id : str
        The job to reconcile.
    logs : Mapping[str, Sequence[DataUseRecord]]
        Per node (log) name, all its records (others' jobs are ignored).

    Returns
    -------
    list[str]
        Problems, each starting with ``missing-at-node``, ``mismatch`` or
        ``released-without-approval``; empty when the job reconciles.
    """
    per_node = {n: [r for r in recs if r.job_id == job_id] for n, recs in logs.items()}
    problems = []
    expected = set(per_node)
    for recs in per_node.values():
        for r in recs:
            if r.details.get("participants"):
                expected |= {p.strip() for p in r.details["participants"].split(",") if p.strip()}
    for node in sorted(expected):
        if not per_node.get(node):
            problems.append(f"missing-at-node {node}: no record of job {job_id}")
    everyone = [r for recs in per_node.values() for r in recs]
    for name in _AGREE:
        values = sorted({getattr(r, name) for r in everyone})
        if len(values) > 1:
            problems.append(f"mismatch {name}: nodes recorded {', '.join(map(repr, values))}")
    for k in _JOB_DETAILS:
        values = sorted({r.details[k] for r in everyone if k in r.details})
        if len(values) > 1:
            problems.append(f"mismatch {k}: nodes recorded {', '.join(map(repr, values))}")
    rounds: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in everyone:
        if "round" in r.details:
            key = (r.details["round"], r.details.get("phase", ""))
            for k in _ROUND_DETAILS:
                if k in r.details:
                    rounds[key][k].add(r.details[k])
    for (rnd, phase), seen in sorted(rounds.items()):
        for k, vals in sorted(seen.items()):
            if len(vals) > 1:
                problems.append(f"mismatch round {rnd} {phase} {k}: {', '.join(sorted(vals))}")
    for node, recs in sorted(per_node.items()):
        decisions = [r.decision for r in recs]
        if "released" in decisions and "approved" not in decisions:
            problems.append(f"released-without-approval at {node}: job {job_id}")
    return problems
