"""Releasing a protected query's answer: read, apply the dataset's rule, protect, record.

Runs after admission (:mod:`nodes.query.servicer`); the reading and the crypto run off the
event loop:

1. the local aggregate through the store (SUMs clamped to the DP bounds under DP), with
   the non-null count of every column whose aggregate can be NULL
   (:func:`datafed.query.components.components`);
2. where the node reports a domain (a mode that hides groups, or any mode under DP) the
   groups are laid on the node's *own* declared domain (:mod:`datafed.query.domain`):
   every declared key in order -- zeros where the node has no rows -- then one remainder
   group holding every row whose key is NULL or undeclared. The analyst chose none of the
   keys, so no key is reported twice and no row vanishes;
3. DP datasets: discrete Laplace noise on every value of every group of that domain, the
   remainder included (groups are disjoint: parallel composition); exact datasets: SQL's
   answer, nothing withheld or substituted -- the consortium rule (:mod:`nodes.policy.rules`)
   and the client's combined-group threshold are what apply there (``docs/invisibility.md``);
4. the values saturate into what the mode can carry (a signed 64-bit fixed-point value;
   CKKS: the analyst's value bound, inside the mode) instead of refusing -- a refusal after
   admission would tell the analyst something about the data;
5. the mode protects the values, bound to the job statement's digest and roster;
6. ``released`` is appended with the answer's digest; per-node facts (how many groups held
   rows) go to the entry's private part, never to the analyst.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, StatementError

from datafed.modes import SteppedMode
from datafed.proto.v1 import query_pb2
from datafed.query.components import Component, components
from datafed.query.domain import GroupKey, is_remainder
from datafed.wire.serde import literal_to_proto
from nodes.config import DpPolicy
from nodes.context import NodeContext
from nodes.errors import RequestFault
from nodes.limits import check_groups
from nodes.policy import Grant
from nodes.policy.dp import add_noise
from nodes.query.job import QueryJob
from nodes.query.jobs import JobBinding
from nodes.release.guard import one_text
from nodes.rpc import SignedCall
from nodes.stores import GroupRow
from nodes.stores.types import sort_key

__all__ = ["INT64", "answer_digest", "local_vector", "release_query", "saturate"]

#: Values a node reports are signed 64-bit fixed-point integers: ``[-2^63, 2^63)``.
INT64 = 1 << 63


def answer_digest(response: query_pb2.QueryResponse) -> str:
    """Hex SHA-256 of an answer before its ledger head and receipt are attached."""
    return hashlib.sha256(response.SerializeToString(deterministic=True)).hexdigest()


async def release_query(
    ctx: NodeContext, call: SignedCall, grant: Grant, job: QueryJob
) -> query_pb2.QueryResponse:
    """The protected answer of an admitted query, recorded as ``released`` (module docs)."""
    response, facts = await call.compute(_answer, ctx, grant, job)
    await call.release(answer_digest(response), "released", private=facts)
    return response


def local_vector(
    groups: Sequence[GroupRow], width: int, domain: Sequence[GroupKey] | None
) -> tuple[list[GroupKey], list[int]]:
    """The keys a node reports and its group-major values (``width`` per group).

    With a ``domain`` every key of it is reported in order -- zeros where the node has no
    rows -- and each group whose key is not in it (NULL or undeclared) is added into the
    domain's remainder (its last key); without one the node's own groups, sorted by key.
    """
    if domain is None:
        keys = sorted((g.key for g in groups), key=sort_key)
        rows = {g.key: g.values for g in groups}
        return keys, [v for k in keys for v in rows[k]]
    index = {k: i for i, k in enumerate(domain) if not is_remainder(k)}
    rest = len(domain) - 1 if domain and is_remainder(domain[-1]) else None
    flat = [0] * (len(domain) * width)
    for g in groups:
        i = index.get(g.key) if None not in g.key else None
        if i is None:
            if rest is None:
                continue  # no GROUP BY: the domain is the one empty key, always matched
            i = rest
        for c, v in enumerate(g.values):
            flat[i * width + c] += v
    return list(domain), flat


def saturate(values: Sequence[int], low: int = -INT64, high: int = INT64 - 1) -> list[int]:
    """``values`` clamped into ``[low, high]`` (what a mode can carry), never refused."""
    return [min(max(v, low), high) for v in values]


@one_text
def _answer(
    ctx: NodeContext, grant: Grant, job: QueryJob
) -> tuple[query_pb2.QueryResponse, dict[str, str]]:
    spec, dp, bits = job.spec, grant.policy.dp, job.fixed_point_bits
    comps = components(spec)
    groups = _aggregate(ctx, job, comps, dp)
    if job.domain is None:
        check_groups(len(groups), ctx.config.limits)  # keys a node's own-groups answer shows
    keys, flat = local_vector(groups, len(comps), job.domain)
    stddev: list[float] = []
    if dp is not None:
        flat, stddev = add_noise(flat, comps, dp, bits)
    wire = components(spec)
    response = query_pb2.QueryResponse(
        node=ctx.name,
        job_id=job.statement.statement.job_id,
        components=[c.label for c in wire],
        fixed_point_bits=bits,
        payload=_protect(ctx, grant, job, wire, saturate(flat)),
        epsilon=grant.epsilon,
        noise_stddev=stddev,
    )
    for k in keys:
        response.groups.add().values.extend(literal_to_proto(v) for v in k)
    return response, {"groups_with_rows": str(len(groups)), "groups_reported": str(len(keys))}


def _aggregate(
    ctx: NodeContext, job: QueryJob, comps: Sequence[Component], dp: DpPolicy | None
) -> list[GroupRow]:
    """The store's local aggregate; a request's own fault is said without the data."""
    try:
        return ctx.store.aggregate(
            job.spec, comps, job.fixed_point_bits, dp.bounds if dp is not None else None
        )
    except StatementError as exc:
        if isinstance(exc, DBAPIError) or not isinstance(exc.orig, (ValueError, TypeError)):
            raise  # the database's own errors (nodes/stores/__init__.py maps those)
        # A literal SQLAlchemy cannot bind to its column's type ('steel' for a REAL column,
        # 33 after True in one IN list): the request's fault, said without the data.
        raise RequestFault("a value in the query does not fit its column's type") from exc


def _protect(
    ctx: NodeContext, grant: Grant, job: QueryJob, comps: Sequence[Component], flat: list[int]
) -> bytes:
    st = job.statement
    header = grant.use.header
    bound = JobBinding(
        st.digest,
        st.statement.roster,
        grant.policy.min_participants,
        _required(grant),
    )
    stash: Any = (
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
    return job.mode.protect(env, job.params, flat)


def _required(grant: Grant) -> tuple[str, ...]:
    """Nodes whose data every released total must include.

    Exact data: the whole consortium (a ``secagg`` job with a dropout releases nothing);
    under DP: the policy's ``required_participants``.
    """
    policy = grant.policy
    names = policy.consortium if policy.dp is None else policy.required_participants
    return tuple(sorted(names))
