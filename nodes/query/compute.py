"""An admitted query's computation at the node: aggregate, limit, noise, protect (blocking).

Runs off the event loop after admission (:mod:`nodes.query.servicer`):

1. the local aggregate through the store (SUMs clamped to the DP bounds under DP), with
   the non-null count of every column whose aggregate can be NULL
   (:func:`datafed.query.components.components`);
2. exact datasets: groups under ``min_group_size`` suppressed (or the query refused) --
   each suppressed group is reported with zeros and the suppression indicator 1, so the
   analyst sees *that* it was suppressed, combined under the mode's protection with the
   other nodes' indicators, never as an empty group -- and the differencing defence
   (:mod:`nodes.policy.history`) settles each released group's values atomically; DP
   datasets: discrete Laplace noise instead (exact-count suppression would break the DP
   guarantee, ``docs/policy.md``), the indicator is always 0 and gets no noise;
3. the values aligned on the declared group domain (modes that hide groups) and protected
   by the mode, bound to the job statement's digest and roster.

It returns the answer and the per-node facts for the ledger's private part (how many
groups were released and suppressed): data-dependent, so never in the analyst's receipt.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, StatementError

from datafed.modes import SteppedMode
from datafed.proto.v1 import query_pb2
from datafed.query.components import Component, components, reported_components
from datafed.wire.serde import literal_to_proto
from nodes.config import DpPolicy
from nodes.context import NodeContext
from nodes.errors import InvalidRequest
from nodes.limits import check_groups
from nodes.policy import Grant, ReleasedGroup
from nodes.policy.dp import add_noise
from nodes.policy.rules import apply_min_group_size
from nodes.query.job import QueryJob
from nodes.query.jobs import JobBinding
from nodes.stores import GroupRow
from nodes.stores.types import sort_key

__all__ = ["answer_digest", "compute", "local_vector"]

Key = tuple[Any, ...]


def answer_digest(response: query_pb2.QueryResponse) -> str:
    """Hex SHA-256 of an answer before its ledger head and receipt are attached."""
    return hashlib.sha256(response.SerializeToString(deterministic=True)).hexdigest()


def local_vector(
    released: Sequence[GroupRow],
    suppressed: Sequence[Key],
    width: int,
    domain: Sequence[Key] | None,
) -> tuple[list[Key], list[int]]:
    """The keys a node reports and its group-major values, the indicator last per group.

    ``released`` groups report their ``width`` values and 0; ``suppressed`` keys report
    zeros and 1.  With a ``domain`` (modes that hide groups) every declared key is
    reported in order, zeros and 0 where the node has no rows; without one the node's own
    groups, sorted by key.
    """
    rows: dict[Key, tuple[int, ...]] = {g.key: (*g.values, 0) for g in released}
    rows.update({k: (0,) * width + (1,) for k in suppressed})
    keys = list(domain) if domain is not None else sorted(rows, key=sort_key)
    empty = (0,) * (width + 1)
    return keys, [v for k in keys for v in rows.get(k, empty)]


def _noisy(
    flat: list[int], comps: Sequence[Component], dp: DpPolicy, bits: int
) -> tuple[list[int], list[float]]:
    """Noise every data component; the suppression indicator stays 0, without noise."""
    width = len(comps) + 1
    data = [v for i, v in enumerate(flat) if i % width != width - 1]
    noisy, stddev = add_noise(data, comps, dp, bits)
    out: list[int] = []
    for g in range(len(flat) // width):
        out += noisy[g * len(comps) : (g + 1) * len(comps)]
        out.append(0)
    return out, [*stddev, 0.0]


def compute(
    ctx: NodeContext, grant: Grant, job: QueryJob
) -> tuple[query_pb2.QueryResponse, dict[str, str]]:
    """The protected answer of an admitted query and its private facts (see module docs)."""
    spec, policy, bits = job.spec, grant.policy, job.fixed_point_bits
    comps = components(spec)
    dp = policy.dp
    try:
        groups = ctx.store.aggregate(spec, comps, bits, dp.bounds if dp is not None else None)
    except ValueError as exc:  # a value the fixed-point encoding refuses (text, infinity)
        raise InvalidRequest(str(exc)) from exc
    except StatementError as exc:
        if isinstance(exc, DBAPIError) or not isinstance(exc.orig, (ValueError, TypeError)):
            raise  # the database's own errors (nodes/stores/__init__.py maps those)
        # A literal SQLAlchemy cannot bind to its column's type ('steel' for a REAL column,
        # 33 after True in one IN list): the request's fault, said without the data.
        raise InvalidRequest("a value in the query does not fit its column's type") from exc
    if job.domain is None:
        check_groups(len(groups), ctx.config.limits)  # keys the answer reveals anyway
    small: list[Key] = []
    if dp is None:
        keep = apply_min_group_size(policy, [g.rows for g in groups])
        small = [g.key for g, k in zip(groups, keep, strict=True) if not k]
        groups = [g for g, k in zip(groups, keep, strict=True) if k]
        if policy.differencing_defence and policy.min_group_size > 1 and groups:
            groups = _settle(ctx, job, comps, policy.min_group_size, groups)
    keys, flat = local_vector(groups, small, len(comps), job.domain)
    stddev: list[float] = []
    if dp is not None:
        flat, stddev = _noisy(flat, comps, dp, bits)
    wire = reported_components(spec)
    payload = _protect(ctx, grant, job, wire, flat)
    response = query_pb2.QueryResponse(
        node=ctx.name,
        job_id=job.statement.statement.job_id,
        components=[c.label for c in wire],
        fixed_point_bits=bits,
        payload=payload,
        epsilon=grant.epsilon,
        noise_stddev=stddev,
    )
    for k in keys:
        response.groups.add().values.extend(literal_to_proto(v) for v in k)
    facts = {"groups_released": str(len(groups)), "groups_suppressed": str(len(small))}
    return response, facts


def _settle(
    ctx: NodeContext, job: QueryJob, comps: Sequence[Component], k: int, groups: list[GroupRow]
) -> list[GroupRow]:
    """Apply the differencing defence: near-duplicates of released row sets get old values."""
    ids = ctx.store.row_ids(job.spec, [g.key for g in groups])
    if ids is None:  # no stable row identity in this store: nothing to compare
        return groups
    labels = [c.label for c in comps]
    settled = ctx.history.settle(
        job.spec.dataset,
        k,
        [ReleasedGroup(ids[g.key], dict(zip(labels, g.values, strict=True))) for g in groups],
    )
    return [
        GroupRow(g.key, g.rows, tuple(values[label] for label in labels))
        for g, values in zip(groups, settled, strict=True)
    ]


def _protect(
    ctx: NodeContext, grant: Grant, job: QueryJob, comps: Sequence[Component], flat: list[int]
) -> bytes:
    st = job.statement
    header = grant.use.header
    bound = JobBinding(st.digest, st.statement.roster, grant.policy.min_participants)
    stash = (
        ctx.jobs.stash(header, job.spec.dataset, job.mode.name, bound)
        if issubclass(job.mode, SteppedMode)
        else None
    )
    env = dataclasses.replace(
        ctx.mode_env(header.job_id, bound),
        components=tuple(comps),
        fixed_point_bits=job.fixed_point_bits,
        stash=stash,
        requester=header.requester,
    )
    try:
        return job.mode.protect(env, job.params, flat)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(str(exc)) from exc
