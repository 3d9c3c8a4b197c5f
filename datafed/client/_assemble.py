"""Checking node answers and combining them into one :class:`QueryResult`.

Per group, the totals of every reported component (:mod:`datafed.query.components`):
sums across nodes, except MIN and MAX under ``plain``, merged across nodes while skipping
a node whose non-null count is 0 (its 0 is a NULL, not a value).  A group whose combined
row count is below the largest *k* (``min_group_size``) of the nodes is flagged
suppressed and its values withheld -- on a DP dataset its noisy count (post-processing of
a DP release), on exact data its exact count (a publication rule applied here, on the
combined group; ``docs/invisibility.md``).  The remainder group of a domain (rows whose
key is NULL or undeclared, :mod:`datafed.query.domain`) is flagged as such.

Before the query is sent, :func:`reported_groups` fixes the groups the nodes report
where they report a domain (every node the same :func:`group_domain`, so the payloads
combine) and :func:`group_threshold` the *k* the flagging uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from datafed.client.nodeinfo import NodeInfo, ledger_head
from datafed.errors import ProtocolError, QueryError
from datafed.modes import Combined, OneShotMode, ProtectionMode
from datafed.proto.v1 import query_pb2
from datafed.query.components import (
    Component,
    finalize_exact,
    group_rows_count,
    output_labels,
)
from datafed.query.domain import MAX_DOMAIN_GROUPS, GroupKey, declared_domain, is_remainder
from datafed.query.result import QueryResult
from datafed.query.spec import QuerySpec, Scalar
from datafed.wire.serde import literal_from_proto

__all__ = [
    "MAX_GROUPS",
    "GroupKey",
    "assemble",
    "group_domain",
    "group_threshold",
    "ledger_head",
    "reported_groups",
]

#: Most groups a reported domain may span (declared keys and the remainder).
MAX_GROUPS = MAX_DOMAIN_GROUPS


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
    k: int | None = None,
) -> QueryResult:
    """Check every answer, combine per group, finalize the aggregates.

    ``comps`` are the components every node reports
    (:func:`~datafed.query.components.components`); ``combined``: the totals of a
    multi-step mode (:meth:`ProtectionMode.finish`); ``k``: the largest ``min_group_size``
    among the nodes, to flag groups whose combined row count is below it (module docs).
    """
    for a in answers:
        _check(a, comps, bits, job)
    flat = combined.values if combined is not None else None
    totals = combine_groups(mode, comps, len(spec.group_by), domain, answers, flat)
    width = len(output_labels(spec))
    noisy = any(a.noise_stddev for a in answers)
    rows, exact, flags, rest = [], [], [], []
    last = domain is not None  # the remainder of a domain comes last
    for key in sorted(totals, key=lambda g: (last and is_remainder(g), _sort_key(g))):
        t = dict(zip(comps, totals[key], strict=True))
        n = group_rows_count(spec, t) if k is not None else None
        # Under DP the noisy count decides; exact data: an empty group shows its zeros.
        hidden = n is not None and k is not None and n < k and (noisy or n > 0)
        values = (None,) * width if hidden else finalize_exact(spec, t, bits, len(answers))
        exact.append((*key, *values))
        rows.append((*key, *(float(v) if isinstance(v, Decimal) else v for v in values)))
        flags.append(hidden)
        rest.append(domain is not None and is_remainder(key))
    if not spec.group_by and not rows:
        empty = tuple(
            0 if a.func in ("count", "histogram") else None
            for a in spec.aggregates
            for _ in a.labels
        )
        rows.append(empty)
        exact.append(empty)
        flags.append(False)
        rest.append(False)
    return QueryResult(
        columns=(*spec.group_by, *output_labels(spec)),
        rows=tuple(rows),
        exact_rows=tuple(exact),
        suppressed=tuple(flags),
        remainder=tuple(rest),
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
    """The domain every node reports: the declared values, the same at every node.

    Each node reports its *own* declared domain (:mod:`datafed.query.domain`), so the nodes
    of a job must declare the same values for every GROUP BY column; a node that does not
    is named here, before anything is sent.
    """
    declared: dict[str, list[Scalar]] = {}
    for col in spec.group_by:
        seen: dict[str, frozenset[Scalar]] = {}
        for info in infos:
            values = info.group_domains.get(spec.dataset, {}).get(col)
            if not values:
                raise QueryError(
                    f"GROUP BY {col} here needs every node to declare the values of {col!r} "
                    f"(policy group_domains); {info.node!r} does not"
                )
            seen[info.node] = frozenset(values)
            declared.setdefault(col, list(values))
        if len(set(seen.values())) > 1:
            raise QueryError(
                f"the nodes declare different values for {col!r} (policy group_domains): "
                + "; ".join(f"{n}: {sorted(map(str, v))}" for n, v in sorted(seen.items()))
            )
    return declared_domain(spec.group_by, declared, limit=MAX_GROUPS)


def group_threshold(dataset: str, infos: Sequence[NodeInfo]) -> int | None:
    """The largest *k* (``min_group_size``) among the nodes that describe ``dataset``."""
    ks = [d.access.min_group_size for i in infos if (d := i.described.get(dataset)) is not None]
    return max(ks) if ks else None


def _is_dp(dataset: str, infos: Sequence[NodeInfo]) -> bool:
    return any((d := i.described.get(dataset)) is not None and d.access.dp for i in infos)


def reported_groups(
    spec: QuerySpec, mode: ProtectionMode, infos: Sequence[NodeInfo]
) -> list[GroupKey] | None:
    """The groups every node reports where it reports a domain (``None``: its own groups).

    Modes that hide groups report the domain; so does every mode on a DP dataset (which
    keys a node has is data). Without a GROUP BY the domain is the one empty key.
    """
    if not (mode.hides_groups or _is_dp(spec.dataset, infos)):
        return None
    return group_domain(spec, infos)
