"""Data-use summaries, job listings and cross-node reconciliation over decoded records.

Every function takes the records of each log by node name, in index order (position =
entry index, as in an export), so that problems can name the entries behind them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from audit.records import DataUseRecord

__all__ = ["STATEMENT_KEY", "JobRow", "UsageRow", "list_jobs", "reconcile", "summarize"]

#: The public details key under which each node records the hex digest of the analyst's
#: signed job statement (one per job, the same at every participating node).
STATEMENT_KEY = "statement"

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

    Epsilon is what the entries carry, whatever their decision: a node charges its budget
    exactly the epsilon written on its entries (a query admitted and then refused still
    costs what its entry says), and replays the same sum at restart.
    """
    if by not in DataUseRecord.__dataclass_fields__ or by == "details":
        raise ValueError(f"cannot group by {by!r}")
    rows: dict[str, UsageRow] = {}
    for r in records:
        key = str(getattr(r, by))
        row = rows.setdefault(key, UsageRow(key))
        row.entries += 1
        row.decisions[r.decision] += 1
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
        Problems, each starting with ``no-such-job`` (no log holds the job: the only
        problem then), ``missing-at-node``, ``mismatch``, ``released-without-approval`` or
        ``decision-differs`` (some nodes admitted the job, others denied it); empty when the
        job reconciles.  ``mismatch
        statement`` names every node and entry index behind each statement digest.
    """
    per_node = {n: [r for r in recs if r.job_id == job_id] for n, recs in logs.items()}
    if not any(per_node.values()):
        return [f"no-such-job: no entry of job {job_id} in any of the {len(logs)} log(s)"]
    problems = _statements(job_id, logs)
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
        if not decisions:
            continue
        if "released" in decisions and "approved" not in decisions:
            problems.append(f"released-without-approval at {node}: job {job_id}")
    problems += _outcomes(job_id, per_node)
    return problems


def _outcome(recs: Sequence[DataUseRecord]) -> str:
    """What one node decided about a job: ``denied`` (never admitted) or ``admitted``."""
    return "admitted" if any(r.decision in ("approved", "released") for r in recs) else "denied"


def _outcomes(job_id: str, per_node: Mapping[str, Sequence[DataUseRecord]]) -> list[str]:
    """``decision-differs`` if some nodes admitted the job and others denied it."""
    by: dict[str, list[str]] = defaultdict(list)
    for node, recs in sorted(per_node.items()):
        if recs:
            by[_outcome(recs)].append(node)
    if len(by) < 2:
        return []
    return [
        f"decision-differs: job {job_id} was admitted at {', '.join(by['admitted'])} "
        f"but denied at {', '.join(by['denied'])}"
    ]


def _statements(job_id: str, logs: Mapping[str, Sequence[DataUseRecord]]) -> list[str]:
    """``mismatch statement`` if the job's entries carry more than one statement digest."""
    seen: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for node, recs in logs.items():
        for i, r in enumerate(recs):
            if r.job_id == job_id and r.details.get(STATEMENT_KEY):
                seen[r.details[STATEMENT_KEY]][node].append(i)
    if len(seen) < 2:
        return []
    parts = []
    for digest, where in sorted(seen.items()):
        at = "; ".join(
            f"{node} {'entry' if len(idx) == 1 else 'entries'} {', '.join(map(str, idx))}"
            for node, idx in sorted(where.items())
        )
        parts.append(f"{at} recorded {digest[:16]}")
    return [f"mismatch statement: {' | '.join(parts)}"]


@dataclass
class JobRow:
    """One job across the logs: who, why, when, where, and what each node decided."""

    job_id: str
    nodes: list[str]
    requesters: list[str]
    purposes: list[str]
    operations: list[str]
    first_ms: int
    last_ms: int
    entries: int
    decisions: dict[str, int]
    #: Where each entry is, as ``node:index``.
    where: list[str]


def list_jobs(logs: Mapping[str, Sequence[DataUseRecord]]) -> list[JobRow]:
    """Return one row per job id (entries without a job id are left out), oldest first."""
    acc: dict[str, list[tuple[str, int, DataUseRecord]]] = defaultdict(list)
    for node, recs in logs.items():
        for i, r in enumerate(recs):
            if r.job_id:
                acc[r.job_id].append((node, i, r))
    rows = []
    for job, items in acc.items():
        decisions: dict[str, int] = defaultdict(int)
        for _, _, r in items:
            decisions[r.decision] += 1
        times = [r.time_ms for _, _, r in items]
        rows.append(
            JobRow(
                job_id=job,
                nodes=sorted({n for n, _, _ in items}),
                requesters=sorted({r.requester for _, _, r in items}),
                purposes=sorted({r.purpose for _, _, r in items}),
                operations=sorted({r.operation for _, _, r in items}),
                first_ms=min(times),
                last_ms=max(times),
                entries=len(items),
                decisions=dict(sorted(decisions.items())),
                where=[f"{n}:{i}" for n, i, _ in items],
            )
        )
    return sorted(rows, key=lambda j: (j.first_ms, j.job_id))
