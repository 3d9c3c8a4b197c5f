"""The auditor's report: data use, privacy spent, denials, verification, data circulation.

Built only from verified logs (``datafed-audit report`` verifies each export against the
pinned policy first).  :func:`build_report` returns plain data (JSON-ready);
:mod:`audit.report.html` renders it as one self-contained page, :func:`records_csv` gives
every entry as a spreadsheet row.  Terms (docs/audit.md):

- a *use* is one operation admitted at one node: a distinct ``(node, job, operation,
  dataset)`` with an ``approved`` or ``released`` entry (an entry without a job id is a use
  of its own), dated by its first such entry;
- *administrative events* (``import``, ``policy_reload``: the operator's own acts on the
  node) are listed apart and never count as uses;
- *epsilon spent* is the sum of the epsilon written on the entries, per node and dataset
  (and per requester where the node keeps one budget per requester), as that node's own
  budget counts it: a node's budget is its own, so spending is never added up across
  nodes.  The *enforced* budget is the ``budget_epsilon`` detail the node recorded on its
  admissions (:mod:`nodes.policy.engine`), the *configured* one the auditor's policy's
  ``[budgets]``; a difference between the two is flagged;
- a *cross-agency job* draws on the data of two or more agencies (nodes); a *cross-domain
  join* is an intersection-sum, which links one agency's records to another's.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from audit.policy import Policy
from audit.records import DataUseRecord
from audit.usage import STATEMENT_KEY, list_jobs
from audit.verify import VerifyReport

__all__ = ["ADMIN_OPERATIONS", "JOIN_OPERATIONS", "build_report", "records_csv"]

#: Operations that join records of two agencies (cross-domain joins).
JOIN_OPERATIONS = frozenset({"intersection_sum"})
#: The operator's own acts on a node (not a use of data by a requester).
ADMIN_OPERATIONS = frozenset({"import", "policy_reload"})
MAX_ADMIN_ROWS = 200
MAX_DENIAL_ROWS = 200
_USE = frozenset({"approved", "released"})


def _utc(ms: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(fmt)


def _bucketing(times: Sequence[int]) -> tuple[str, str]:
    span_days = (max(times) - min(times)) / 86_400_000 if times else 0
    if span_days <= 2:
        return "hour", "%Y-%m-%d %H:00"
    if span_days <= 120:
        return "day", "%Y-%m-%d"
    return "month", "%Y-%m"


def _uses(logs: Mapping[str, Sequence[DataUseRecord]]) -> list[tuple[str, DataUseRecord]]:
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for node, recs in logs.items():
        for i, r in enumerate(recs):
            if r.decision not in _USE or r.operation in ADMIN_OPERATIONS:
                continue
            key = (node, r.job_id or f"#{i}", r.operation, r.dataset)
            if key not in seen:
                seen.add(key)
                out.append((node, r))
    return out


def _over_time(uses: list[tuple[str, DataUseRecord]], agency: Any) -> dict[str, Any]:
    times = [r.time_ms for _, r in uses]
    unit, fmt = _bucketing(times)
    labels = sorted({_utc(t, fmt) for t in times})
    at = {label: k for k, label in enumerate(labels)}
    by: dict[str, dict[str, list[int]]] = {}
    for dim in ("requester", "purpose", "dataset"):
        series: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
        for node, r in uses:
            key = f"{agency(node)}: {r.dataset}" if dim == "dataset" else getattr(r, dim)
            series[key or "(none)"][at[_utc(r.time_ms, fmt)]] += 1
        by[dim] = dict(sorted(series.items()))
    return {"unit": unit, "buckets": labels, "by": by}


def _recorded(details: Mapping[str, str], key: str) -> float | None:
    try:
        return float(details[key]) if key in details else None
    except ValueError:
        return None


def _epsilon(
    logs: Mapping[str, Sequence[DataUseRecord]], policy: Policy, agency: Any
) -> list[dict[str, Any]]:
    """Epsilon per node and dataset (per requester where the node's budget is per requester).

    Never summed across nodes: each node enforces its own budget.
    """
    spent: dict[tuple[str, str, str], float] = defaultdict(float)
    count: Counter[tuple[str, str, str]] = Counter()
    by_requester: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    enforced: dict[tuple[str, str], float] = {}
    for node, recs in logs.items():
        scopes = {r.dataset: r.details.get("budget_scope", "dataset") for r in recs}
        for r in recs:
            limit = _recorded(r.details, "budget_epsilon")
            if limit is not None:
                enforced[(node, r.dataset)] = limit  # the latest the node recorded
            if r.epsilon > 0:
                owner = r.requester if scopes[r.dataset] == "requester" else ""
                key = (node, r.dataset, owner)
                spent[key] += r.epsilon
                count[key] += 1
                by_requester[key][r.requester] += 1
    rows = []
    for key in sorted(spent):
        node, dataset, owner = key
        configured = policy.budget(node, dataset)
        limit = enforced.get((node, dataset))
        budget = limit if limit is not None else configured
        mismatch = configured is not None and limit is not None and configured != limit
        rows.append(
            {
                "node": node,
                "agency": agency(node),
                "dataset": dataset,
                "requester": owner or "(all requesters: one budget)",
                "requesters": sorted(by_requester[key]),
                "spent": round(spent[key], 12),
                "enforced_budget": limit,
                "configured_budget": configured,
                "budget": budget,
                "left": None if budget is None else round(budget - spent[key], 9),
                "mismatch": mismatch,
                "charges": count[key],
            }
        )
    return rows


def _admin(logs: Mapping[str, Sequence[DataUseRecord]], agency: Any) -> dict[str, Any]:
    """The operator's own acts (imports, policy reloads), newest first: not data uses."""
    rows = [
        (r.time_ms, node, i, r)
        for node, recs in logs.items()
        for i, r in enumerate(recs)
        if r.operation in ADMIN_OPERATIONS
    ]
    rows.sort(key=lambda x: x[0], reverse=True)
    kinds = Counter(r.operation for *_, r in rows)
    return {
        "total": len(rows),
        "by_operation": dict(sorted(kinds.items())),
        "recent": [
            {
                "time": _utc(t),
                "node": node,
                "agency": agency(node),
                "index": i,
                "operation": r.operation,
                "dataset": r.dataset,
                "decision": r.decision,
                "what": r.details.get("file", "") or r.reason,
            }
            for t, node, i, r in rows[:MAX_ADMIN_ROWS]
        ],
    }


def _denials(logs: Mapping[str, Sequence[DataUseRecord]], agency: Any) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    by_requester: Counter[str] = Counter()
    rows = []
    for node, recs in logs.items():
        for i, r in enumerate(recs):
            if r.decision != "denied" or r.operation in ADMIN_OPERATIONS:
                continue
            reasons[r.reason[:120] or "(no reason)"] += 1
            by_requester[r.requester] += 1
            rows.append((r.time_ms, node, i, r))
    rows.sort(key=lambda x: x[0], reverse=True)
    return {
        "total": sum(reasons.values()),
        "by_reason": [{"reason": k, "count": v} for k, v in reasons.most_common(15)],
        "by_requester": [{"requester": k, "count": v} for k, v in by_requester.most_common()],
        "recent": [
            {
                "time": _utc(t),
                "node": node,
                "agency": agency(node),
                "index": i,
                "requester": r.requester,
                "dataset": r.dataset,
                "purpose": r.purpose,
                "operation": r.operation,
                "reason": r.reason,
            }
            for t, node, i, r in rows[:MAX_DENIAL_ROWS]
        ],
    }


def _circulation(logs: Mapping[str, Sequence[DataUseRecord]], agency: Any) -> dict[str, Any]:
    # data that circulated: jobs with a use (an approval or a release), not refused ones
    jobs = [
        j
        for j in list_jobs(logs)
        if _USE & set(j.decisions) and not set(j.operations) <= ADMIN_OPERATIONS
    ]
    pairs: Counter[tuple[str, str]] = Counter()
    purposes: dict[str, dict[str, Any]] = {}
    joined: Counter[tuple[str, str]] = Counter()
    reach: dict[str, set[str]] = defaultdict(set)
    cross = joins = 0
    for job in jobs:
        agencies = sorted({agency(n) for n in job.nodes})
        is_cross = len(agencies) >= 2
        is_join = bool(JOIN_OPERATIONS & set(job.operations))
        cross += is_cross
        joins += is_join
        for a, b in itertools.combinations(agencies, 2):
            pairs[(a, b)] += 1
            pairs[(b, a)] += 1
        for requester in job.requesters:
            reach[requester].update(agencies)
        for purpose in job.purposes or ["(none)"]:
            p = purposes.setdefault(
                purpose, {"purpose": purpose, "jobs": 0, "cross_agency": 0, "joins": 0, "a": set()}
            )
            p["jobs"] += 1
            p["cross_agency"] += is_cross
            p["joins"] += is_join
            p["a"].update(agencies)
        if is_join:
            sides = sorted(
                {
                    f"{agency(n)}: {r.dataset}"
                    for n in job.nodes
                    for r in logs[n]
                    if r.job_id == job.job_id and r.operation in JOIN_OPERATIONS
                }
            )
            for a, b in itertools.combinations(sides, 2):
                joined[(a, b)] += 1
    names = sorted({agency(n) for n in logs})
    return {
        "agencies": names,
        "jobs": len(jobs),
        "cross_agency_jobs": cross,
        "cross_domain_joins": joins,
        "pairs": [{"a": a, "b": b, "jobs": v} for (a, b), v in sorted(pairs.items()) if a < b],
        "by_purpose": [
            {k: (len(v) if k == "a" else v) for k, v in p.items()} | {"agencies": len(p["a"])}
            for _, p in sorted(purposes.items())
        ],
        "joined_datasets": [{"a": a, "b": b, "jobs": v} for (a, b), v in sorted(joined.items())],
        "requester_reach": [{"requester": k, "agencies": len(v)} for k, v in sorted(reach.items())],
    }


def _verification(
    logs: Mapping[str, Sequence[DataUseRecord]], reports: Mapping[str, VerifyReport], agency: Any
) -> list[dict[str, Any]]:
    out = []
    for node in sorted(reports):
        rep = reports[node]
        latest = rep.latest.size if rep.latest else 0
        out.append(
            {
                "node": node,
                "agency": agency(node),
                "origin": rep.origin,
                "entries": rep.entries,
                "checkpoints": len(rep.checkpoints),
                "signed_up_to": latest,
                "witnessed_up_to": rep.witnessed,
                "quorum": rep.quorum,
                "witnesses": rep.witnesses,
                "quorum_line": rep.quorum_line(),
                "private_parts_checked": rep.private,
                "statements": sum(1 for r in logs.get(node, ()) if STATEMENT_KEY in r.details),
                "ok": rep.ok,
                "warnings": list(rep.warnings),
            }
        )
    return out


def build_report(
    logs: Mapping[str, Sequence[DataUseRecord]],
    reports: Mapping[str, VerifyReport],
    policy: Policy,
) -> dict[str, Any]:
    """Return the report as plain data (see the module docstring for its terms).

    Parameters
    ----------
    logs : Mapping[str, Sequence[DataUseRecord]]
        Each node's records in index order (from verified exports).
    reports : Mapping[str, VerifyReport]
        The verification report of each node's log.
    policy : Policy
        The auditor's policy (agency names, budgets, quorum).
    """

    def agency(node: str) -> str:
        return policy.agencies.get(node, node)

    records = [r for recs in logs.values() for r in recs]
    data_records = [r for r in records if r.operation not in ADMIN_OPERATIONS]
    decisions = Counter(r.decision for r in data_records)
    uses = _uses(logs)
    times = [r.time_ms for r in records]
    epsilon = _epsilon(logs, policy, agency)
    return {
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "period": [_utc(min(times)), _utc(max(times))] if times else [],
        "totals": {
            "logs": len(logs),
            "entries": len(records),
            "uses": len(uses),
            "approved": decisions["approved"],
            "released": decisions["released"],
            "denied": decisions["denied"],
            "admin_events": len(records) - len(data_records),
            "budget_mismatches": sum(1 for r in epsilon if r["mismatch"]),
        },
        "verification": _verification(logs, reports, agency),
        "uses_over_time": _over_time(uses, agency),
        "epsilon": epsilon,
        "denials": _denials(logs, agency),
        "admin": _admin(logs, agency),
        "circulation": _circulation(logs, agency),
    }


CSV_FIELDS = (
    "node",
    "index",
    "time_utc",
    "requester",
    "requester_role",
    "dataset",
    "purpose",
    "legal_basis",
    "operation",
    "protection",
    "decision",
    "reason",
    "epsilon",
    "job_id",
    "statement",
    "request_digest",
    "result_digest",
    "private_commitment",
)


def _cell(value: object) -> object:
    """Defuse a spreadsheet formula: prefix ``'`` to text starting with = + - @ TAB CR.

    OWASP "CSV injection": requester names and purposes come from requests.
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def records_csv(logs: Mapping[str, Sequence[DataUseRecord]]) -> str:
    """Return every entry as one CSV row (``CSV_FIELDS``), by node then index.

    Text cells that a spreadsheet would run as a formula are defused (see ``_cell``).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for node in sorted(logs):
        for i, r in enumerate(logs[node]):
            w.writerow(map(_cell, _csv_row(node, i, r)))
    return buf.getvalue()


def _csv_row(node: str, index: int, r: DataUseRecord) -> list[object]:
    """The cells of one entry, in the order of ``CSV_FIELDS``: the rest are record fields."""
    made: dict[str, object] = {
        "node": node,
        "index": index,
        "time_utc": _utc(r.time_ms, "%Y-%m-%dT%H:%M:%S"),
        "epsilon": repr(r.epsilon),
        "statement": r.details.get(STATEMENT_KEY, ""),
    }
    return [made[f] if f in made else getattr(r, f) for f in CSV_FIELDS]
