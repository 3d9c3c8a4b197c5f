"""Model lineage: from a model's digest, through the node ledgers, to every round behind it.

A pure function over decoded ledger records (no I/O), so an auditor can run it on
verified exports. Each node records, per job:

- ``fl_train``   ``approved``/``denied``: the analyst's signed request (its digest), purpose,
  dataset, DP parameters and approved rounds;
- ``fl_round``   ``released``: round *r*, the digest of the global model it received
  (``model_in``) and of the update it sent (``result_digest``), the examples used, epsilon;
- ``fl_evaluate`` ``released``: the digest of the model it evaluated (after round *r*).

The final model of a job is the one its nodes evaluated after the last round, so a model
digest leads to the ``fl_evaluate`` entries that name it, hence to the job, and from the
job to every round, participant and policy decision. Along the way the checks that can
fail are reported as named problems: nodes that disagree on a round's global model, a
release without an approval at that node, an update released under a different request
than the approval, or rounds beyond those approved.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from audit.errors import LineageError
from audit.records import DataUseRecord

__all__ = ["Lineage", "LineageRound", "format_lineage", "model_lineage"]

#: One job's records, by node.
_Records = Mapping[str, Sequence[DataUseRecord]]


@dataclass(frozen=True)
class LineageRound:
    """One training round as the ledgers show it."""

    round: int
    model_in: tuple[str, ...]
    participants: tuple[str, ...]
    updates: dict[str, str]
    examples: dict[str, int]
    epsilon: dict[str, float]


@dataclass(frozen=True)
class Lineage:
    """Everything the ledgers say about how a model came to be."""

    model_sha256: str
    job_id: str
    requester: str
    purpose: str
    dataset: str
    decisions: dict[str, str]
    rounds: tuple[LineageRound, ...]
    evaluated_by: tuple[str, ...]
    final_round: int
    epsilon: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.problems


def _job_of(model: str, logs: Mapping[str, Sequence[DataUseRecord]]) -> tuple[str, int]:
    hits = {
        (r.job_id, int(r.details.get("round", "0")))
        for recs in logs.values()
        for r in recs
        if r.operation == "fl_evaluate"
        and r.decision == "released"
        and r.details.get("model_in") == model
    }
    if not hits:
        raise LineageError(f"no ledger records an evaluation of model {model}")
    jobs = {j for j, _ in hits}
    if len(jobs) > 1:
        raise LineageError(f"model {model} appears in several jobs: {', '.join(sorted(jobs))}")
    return next(iter(jobs)), max(r for _, r in hits)


def model_lineage(model_sha256: str, logs: Mapping[str, Sequence[DataUseRecord]]) -> Lineage:
    """Trace ``model_sha256`` through the nodes' records.

    Parameters
    ----------
    model_sha256 : str
        The final model's digest (:func:`datafed.fl.digest.arrays_digest`).
    logs : Mapping[str, Sequence[DataUseRecord]]
        Every node's records (from verified ledgers or exports), by node name.

    Returns
    -------
    Lineage
        The job, its approvals and refusals, each round's participants and digests, and
        the problems found (empty when the lineage holds).

    Raises
    ------
    LineageError
        If no ledger names the model, or it is ambiguous.
    """
    job, final = _job_of(model_sha256, logs)
    mine = {n: [r for r in recs if r.job_id == job] for n, recs in logs.items()}
    problems: list[str] = []
    decisions, approvals = _decisions(mine)
    per_round, epsilon = _released_updates(mine, approvals, problems)
    rounds = _rounds(final, per_round, _evaluated_models(mine), problems)
    evaluated = tuple(
        sorted(
            n
            for n, recs in mine.items()
            for r in recs
            if r.operation == "fl_evaluate" and r.details.get("model_in") == model_sha256
        )
    )
    head = next(iter(approvals.values()), None) or next(
        (r for recs in mine.values() for r in recs), None
    )
    return Lineage(
        model_sha256=model_sha256,
        job_id=job,
        requester=head.requester if head else "",
        purpose=head.purpose if head else "",
        dataset=head.dataset if head else "",
        decisions=decisions,
        rounds=tuple(rounds),
        evaluated_by=evaluated,
        final_round=final,
        epsilon=epsilon,
        problems=tuple(problems),
    )


def _decisions(mine: _Records) -> tuple[dict[str, str], dict[str, DataUseRecord]]:
    """Each node's last ``fl_train`` decision (with its reason if denied) and its approval."""
    decisions: dict[str, str] = {}
    approvals: dict[str, DataUseRecord] = {}
    for node, recs in sorted(mine.items()):
        opens = [r for r in recs if r.operation == "fl_train"]
        if opens:
            last = opens[-1]
            decisions[node] = (
                last.decision if last.decision != "denied" else f"denied: {last.reason}"
            )
            if any(r.decision == "approved" for r in opens):
                approvals[node] = next(r for r in opens if r.decision == "approved")
    return decisions, approvals


def _released_updates(
    mine: _Records, approvals: Mapping[str, DataUseRecord], problems: list[str]
) -> tuple[dict[int, list[tuple[str, DataUseRecord]]], dict[str, float]]:
    """Each released update by round, and epsilon by node; each checked against its approval."""
    per_round: dict[int, list[tuple[str, DataUseRecord]]] = defaultdict(list)
    epsilon: dict[str, float] = defaultdict(float)
    for node, recs in sorted(mine.items()):
        for r in recs:
            if r.operation != "fl_round" or r.decision != "released":
                continue
            per_round[int(r.details.get("round", "0"))].append((node, r))
            epsilon[node] += r.epsilon
            approval = approvals.get(node)
            if approval is None:
                problems.append(
                    f"released-without-approval at {node}: round {r.details.get('round')}"
                )
            elif r.request_digest != approval.request_digest:
                problems.append(f"request-mismatch at {node}: round {r.details.get('round')}")
            elif int(r.details.get("round", "0")) > int(approval.details.get("rounds", "0")):
                problems.append(f"beyond-approved-rounds at {node}: round {r.details.get('round')}")
    return per_round, dict(epsilon)


def _evaluated_models(mine: _Records) -> dict[int, set[str]]:
    """The digests of the models evaluated after each round."""
    evaluated_models: dict[int, set[str]] = defaultdict(set)
    for recs in mine.values():
        for r in recs:
            if r.operation == "fl_evaluate" and r.decision == "released":
                evaluated_models[int(r.details.get("round", "0"))].add(
                    r.details.get("model_in", "")
                )
    return evaluated_models


def _rounds(
    final: int,
    per_round: Mapping[int, list[tuple[str, DataUseRecord]]],
    evaluated_models: Mapping[int, set[str]],
    problems: list[str],
) -> list[LineageRound]:
    """Rounds 1 to ``final``: each recorded, on one global model, chained to the last one."""
    rounds = []
    for rnd in range(1, final + 1):
        entries = per_round.get(rnd, [])
        if not entries:
            problems.append(f"missing-round {rnd}: no node recorded an update")
        model_in = tuple(sorted({r.details.get("model_in", "") for _, r in entries}))
        if len(model_in) > 1:
            problems.append(f"model-mismatch round {rnd}: nodes received {len(model_in)} models")
        before = evaluated_models.get(rnd - 1, set())
        if before and model_in and set(model_in) != before:
            problems.append(
                f"chain-broken round {rnd}: it did not start from round {rnd - 1}'s model"
            )
        rounds.append(
            LineageRound(
                round=rnd,
                model_in=model_in,
                participants=tuple(sorted(n for n, _ in entries)),
                updates={n: r.result_digest for n, r in entries},
                examples={n: int(r.details.get("num_examples", "0")) for n, r in entries},
                epsilon={n: r.epsilon for n, r in entries},
            )
        )
    return rounds


def format_lineage(lin: Lineage) -> str:
    """A human-readable account of a lineage (what ``lineage`` commands print)."""
    lines = [
        f"model {lin.model_sha256}",
        f"  job {lin.job_id}: requester {lin.requester!r}, purpose {lin.purpose!r}, "
        f"dataset {lin.dataset!r}",
        "  decisions: " + ", ".join(f"{n}={d}" for n, d in sorted(lin.decisions.items())),
    ]
    for r in lin.rounds:
        model = r.model_in[0][:16] if len(r.model_in) == 1 else f"{len(r.model_in)} different"
        eps = sum(r.epsilon.values())
        lines.append(
            f"  round {r.round}: global model {model}..., participants "
            f"{', '.join(r.participants) or '(none)'}; {sum(r.examples.values())} examples"
            + (f", epsilon {eps:g}" if eps else "")
        )
    lines.append(f"  final model evaluated by: {', '.join(lin.evaluated_by) or '(none)'}")
    lines.extend(f"  PROBLEM {p}" for p in lin.problems)
    lines.append("  lineage OK" if lin.ok else f"  {len(lin.problems)} problem(s)")
    return "\n".join(lines)
