"""Checking node answers and combining them into one :class:`QueryResult`."""

from __future__ import annotations

from collections.abc import Sequence

from datafed.errors import ProtocolError
from datafed.proto.v1 import query_pb2
from datafed.query.components import Component, finalize
from datafed.query.protection import PaillierSession, ProtectionSpec
from datafed.query.result import LedgerHeadInfo, QueryResult
from datafed.query.spec import QuerySpec, Scalar
from datafed.serde import literal_from_proto

__all__ = ["assemble", "ledger_head"]

GroupKey = tuple[Scalar | None, ...]


def ledger_head(node: str, msg: query_pb2.LedgerHead) -> LedgerHeadInfo:
    """Convert a node's ledger head."""
    return LedgerHeadInfo(
        node=node,
        origin=msg.origin,
        size=msg.size,
        root_hash=bytes(msg.root_hash),
        entry_indexes=tuple(msg.entry_indexes),
    )


def _values(pspec: ProtectionSpec, group: query_pb2.GroupResult) -> list[int]:
    want = "plain_fixed" if pspec.mode == "plain" else "paillier_ciphertext"
    out = []
    for v in group.values:
        if v.WhichOneof("kind") != want:
            raise ProtocolError(f"expected {want} values for protection {pspec.mode!r}")
        raw = getattr(v, want)
        out.append(raw if isinstance(raw, int) else int.from_bytes(raw, "big"))
    return out


def _check(
    answer: query_pb2.QueryResponse,
    comps: Sequence[Component],
    pspec: ProtectionSpec,
    job: str,
    n_keys: int,
) -> None:
    labels = tuple(c.label for c in comps)
    if answer.job_id != job:
        raise ProtocolError(f"node {answer.node!r} answered for another job")
    if tuple(answer.components) != labels:
        raise ProtocolError(f"node {answer.node!r} returned components {list(answer.components)}")
    if answer.fixed_point_bits != pspec.fixed_point_bits:
        raise ProtocolError(f"node {answer.node!r} used another fixed-point scale")
    for g in answer.groups:
        if len(g.key) != n_keys or len(g.values) != len(comps):
            raise ProtocolError(f"node {answer.node!r} returned a malformed group")


def _combine_plain(comps: Sequence[Component], per_node: list[list[int]]) -> list[int]:
    out = []
    for c, values in zip(comps, zip(*per_node, strict=True), strict=True):
        if c.kind == "min":
            out.append(min(values))
        elif c.kind == "max":
            out.append(max(values))
        else:
            out.append(sum(values))
    return out


def assemble(
    spec: QuerySpec,
    comps: Sequence[Component],
    pspec: ProtectionSpec,
    paillier: PaillierSession | None,
    job: str,
    answers: Sequence[query_pb2.QueryResponse],
) -> QueryResult:
    """Check every answer, align groups by key, combine, decrypt and finalize."""
    by_key: dict[GroupKey, list[list[int]]] = {}
    for answer in answers:
        _check(answer, comps, pspec, job, len(spec.group_by))
        seen: set[GroupKey] = set()
        for g in answer.groups:
            key = tuple(literal_from_proto(k) for k in g.key)
            if key in seen:
                raise ProtocolError(f"node {answer.node!r} returned group {key!r} twice")
            seen.add(key)
            by_key.setdefault(key, []).append(_values(pspec, g))
    rows: list[tuple[Scalar | None, ...]] = []
    for key in sorted(by_key, key=_sort_key):
        per_node = by_key[key]
        if pspec.mode == "paillier":
            assert paillier is not None
            totals = paillier.decrypt(paillier.combine(per_node))
        else:
            totals = _combine_plain(comps, per_node)
        values = finalize(spec, dict(zip(comps, totals, strict=True)), pspec.fixed_point_bits)
        rows.append((*key, *values))
    if not spec.group_by and not rows:
        rows.append(tuple(0 if a.func == "count" else None for a in spec.aggregates))
    return QueryResult(
        columns=(*spec.group_by, *(a.label for a in spec.aggregates)),
        rows=tuple(rows),
        protection=pspec.mode,
        job_id=job,
        nodes=tuple(a.node for a in answers),
        ledgers=tuple(ledger_head(a.node, a.ledger) for a in answers),
    )


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
