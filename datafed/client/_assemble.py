"""Checking node answers and combining them into one :class:`QueryResult`.

Per group, the totals of every reported component (:mod:`datafed.query.components`):
sums across nodes, except MIN and MAX under ``plain``, merged across nodes while skipping
a node whose non-null count is 0 (its 0 is a NULL, not a value).  A group whose
suppression indicator is positive -- a node suppressed it -- is flagged and its values
withheld; on a DP dataset a group whose noisy row count is below the policy's *k* is
flagged the same way (post-processing of a DP release; ``docs/policy.md``).

Before the query is sent, :func:`reported_groups` fixes the groups a mode that hides
them reports (every node reports every group of :func:`group_domain`, so the payloads
combine) and :func:`dp_threshold` the *k* the DP flagging uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal

from datafed.client.nodeinfo import NodeInfo, ledger_head
from datafed.errors import ProtocolError, QueryError
from datafed.modes import Combined, OneShotMode, ProtectionMode
from datafed.proto.v1 import query_pb2
from datafed.query.components import (
    SUPPRESSED,
    Component,
    finalize_exact,
    group_rows_count,
    output_labels,
)
from datafed.query.result import QueryResult
from datafed.query.spec import QuerySpec, Scalar
from datafed.wire.serde import literal_from_proto

__all__ = [
    "MAX_GROUPS",
    "GroupKey",
    "assemble",
    "dp_threshold",
    "group_domain",
    "ledger_head",
    "reported_groups",
]

GroupKey = tuple[Scalar | None, ...]
#: Most groups a protected GROUP BY may span (the cartesian product of declared values).
MAX_GROUPS = 10_000


def _keys(answer: query_pb2.QueryResponse, width: int) -> list[GroupKey]:
    keys = [tuple(literal_from_proto(v) for v in g.values) for g in answer.groups]
    if any(len(k) != width for k in keys):
        raise ProtocolError(f"node {answer.node!r} returned a malformed group key")
    if len(set(keys)) != len(keys):
        raise ProtocolError(f"node {answer.node!r} returned a group twice")
    return keys


def _check(
    answer: query_pb2.QueryResponse, comps: Sequence[Component], bits: int, job: str
) -> None:
    if answer.job_id != job:
        raise ProtocolError(f"node {answer.node!r} answered for another job")
    if tuple(answer.components) != tuple(c.label for c in comps):
        raise ProtocolError(f"node {answer.node!r} returned components {list(answer.components)}")
    if answer.fixed_point_bits != bits:
        raise ProtocolError(f"node {answer.node!r} used another fixed-point scale")


def _counts_of(comps: Sequence[Component]) -> list[int | None]:
    """For each MIN/MAX component the index of its column's non-null count, else None."""
    where = {c: i for i, c in enumerate(comps)}
    return [
        where[Component("count", c.column)] if c.kind in ("min", "max") else None for c in comps
    ]


def _merge(
    comps: Sequence[Component], counts: Sequence[int | None], a: list[int], b: list[int]
) -> list[int]:
    """One group's values of two nodes: sums, and MIN/MAX over the nodes with values."""
    out = []
    for c, n, x, y in zip(comps, counts, a, b, strict=True):
        if n is None:
            out.append(x + y)
        elif a[n] <= 0 or b[n] <= 0:  # a node without a non-null value reported NULL as 0
            out.append(y if a[n] <= 0 else x)
        else:
            out.append(min(x, y) if c.kind == "min" else max(x, y))
    return out


def combine_groups(
    mode: ProtectionMode,
    comps: Sequence[Component],
    width: int,
    domain: Sequence[GroupKey] | None,
    answers: Sequence[query_pb2.QueryResponse],
    combined: Sequence[int] | None = None,
) -> dict[GroupKey, list[int]]:
    """Totals per group: one combine over a shared domain, or per node then merged by key.

    ``combined``: totals a multi-step mode already produced over the shared domain.
    """
    c = len(comps)
    if domain is not None:
        for a in answers:
            if _keys(a, width) != list(domain):
                raise ProtocolError(f"node {a.node!r} did not report the requested groups")
        if combined is not None:
            flat = list(combined)
        elif isinstance(mode, OneShotMode):
            flat = mode.combine([a.payload for a in answers], comps, len(domain))
        else:
            raise ProtocolError(f"protection {mode.name!r} needs its protocol steps")
        if len(flat) != len(domain) * c:
            raise ProtocolError("the combined totals do not cover the requested groups")
        return {k: flat[i * c : (i + 1) * c] for i, k in enumerate(domain)}
    if combined is not None or not isinstance(mode, OneShotMode):
        raise ProtocolError(f"protection {mode.name!r} needs a shared group domain")
    totals: dict[GroupKey, list[int]] = {}
    counts = _counts_of(comps)
    for a in answers:
        keys = _keys(a, width)
        flat = mode.combine([a.payload], comps, len(keys))
        for i, k in enumerate(keys):
            vals = flat[i * c : (i + 1) * c]
            totals[k] = _merge(comps, counts, totals[k], vals) if k in totals else vals
    return totals


def assemble(
    spec: QuerySpec,
    comps: Sequence[Component],
    mode: ProtectionMode,
    bits: int,
    job: str,
    domain: Sequence[GroupKey] | None,
    answers: Sequence[query_pb2.QueryResponse],
    combined: Combined | None = None,
    *,
    dp_k: int | None = None,
) -> QueryResult:
    """Check every answer, combine per group, finalize the aggregates.

    ``comps`` are the reported components
    (:func:`~datafed.query.components.reported_components`); ``combined``: the totals of
    a multi-step mode (:meth:`ProtectionMode.finish`); ``dp_k``: the *k* of the DP
    datasets among the nodes, to flag groups whose noisy count is below it.
    """
    for a in answers:
        _check(a, comps, bits, job)
    flat = combined.values if combined is not None else None
    totals = combine_groups(mode, comps, len(spec.group_by), domain, answers, flat)
    noisy = any(a.noise_stddev for a in answers)
    width = len(output_labels(spec))
    rows, exact, flags = [], [], []
    for key in sorted(totals, key=_sort_key):
        t = dict(zip(comps, totals[key], strict=True))
        hidden = t.get(SUPPRESSED, 0) > 0
        if not hidden and noisy and dp_k is not None:
            n = group_rows_count(spec, t)
            hidden = n is not None and n < dp_k
        values = (None,) * width if hidden else finalize_exact(spec, t, bits, len(answers))
        exact.append((*key, *values))
        rows.append((*key, *(float(v) if isinstance(v, Decimal) else v for v in values)))
        flags.append(hidden)
    if not spec.group_by and not rows:
        empty = tuple(
            0 if a.func in ("count", "histogram") else None
            for a in spec.aggregates
            for _ in a.labels
        )
        rows.append(empty)
        exact.append(empty)
        flags.append(False)
    return QueryResult(
        columns=(*spec.group_by, *output_labels(spec)),
        rows=tuple(rows),
        exact_rows=tuple(exact),
        suppressed=tuple(flags),
        protection=mode.name,
        job_id=job,
        nodes=combined.nodes if combined is not None else tuple(a.node for a in answers),
        ledgers=tuple(ledger_head(a.node, a.ledger) for a in answers),
        error_bound=combined.error_bound if combined is not None else None,
        epsilon={a.node: a.epsilon for a in answers if a.epsilon},
        noise_stddev=_noise(spec, comps, answers),
    )


def _noise(
    spec: QuerySpec, comps: Sequence[Component], answers: Sequence[query_pb2.QueryResponse]
) -> dict[str, float]:
    """Stddev of the DP noise in each SUM and COUNT of the result (independent per node)."""
    var = [0.0] * len(comps)
    for a in answers:
        if len(a.noise_stddev) not in (0, len(comps)):
            raise ProtocolError(f"node {a.node!r} reported noise for the wrong components")
        for i, sd in enumerate(a.noise_stddev):
            var[i] += sd * sd
    out = {}
    for agg in spec.aggregates:
        if agg.func in ("sum", "count"):
            i = list(comps).index(Component(agg.func, agg.column))
            if var[i]:
                out[agg.label] = var[i] ** 0.5
    return out


def _sort_key(key: GroupKey) -> tuple[tuple[int, float, str], ...]:
    out = []
    for k in key:
        if k is None:
            out.append((0, 0.0, ""))
        elif isinstance(k, (int, float)):
            out.append((1, float(k), ""))
        else:
            out.append((2, 0.0, str(k)))
    return tuple(out)


def group_domain(spec: QuerySpec, infos: Sequence[NodeInfo]) -> list[GroupKey]:
    """The union of every node's declared values for the GROUP BY columns."""
    per_column: list[list[Scalar]] = []
    for col in spec.group_by:
        values: dict[Scalar, None] = {}
        for info in infos:
            declared = info.group_domains.get(spec.dataset, {}).get(col)
            if declared is None:
                raise QueryError(
                    f"GROUP BY {col} under a protected mode needs every node to declare "
                    f"the values of {col!r} (policy group_domains); {info.node!r} does not"
                )
            values.update(dict.fromkeys(declared))
        per_column.append(list(values))
    domain: list[GroupKey] = [tuple(k) for k in itertools.product(*per_column)]
    if len(domain) > MAX_GROUPS:
        raise QueryError(f"GROUP BY spans {len(domain)} groups; at most {MAX_GROUPS}")
    return domain


def dp_threshold(dataset: str, infos: Sequence[NodeInfo]) -> int | None:
    """The largest *k* among the nodes whose ``dataset`` is under DP (``None``: no DP)."""
    ks = [
        d.access.min_group_size
        for i in infos
        if (d := i.described.get(dataset)) is not None and d.access.dp
    ]
    return max(ks) if ks else None


def reported_groups(
    spec: QuerySpec, mode: ProtectionMode, infos: Sequence[NodeInfo]
) -> list[GroupKey] | None:
    """The groups every node reports under a mode that hides them (``None``: any it has)."""
    if not mode.hides_groups:
        return None
    if spec.group_by:
        return group_domain(spec, infos)
    return [()]  # one group; every node reports it, so the payloads combine
