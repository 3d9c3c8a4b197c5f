"""What one request may cost a node: sizes, cost estimates and quotas (``[limits]``).

One analyst with a valid certificate must not be able to exhaust a node for everyone
(issue 10). Every limit here is checked where the request alone decides it -- *before*
admission, so a refusal spends no privacy budget, writes only a ``denied`` entry and
says nothing about the data (it is no oracle):

- request size, per field (:func:`check_query_fields`): spec, WHERE, group domain,
  protection parameters, job statement, sign-offs -- before anything is decoded;
- cost (:func:`estimate`, :func:`check_cost`): values per group (SQLite returns at most
  2000 columns), groups x values, Paillier ciphertexts and the answer's bytes against
  the message limit, from the spec, the declared domain and the mode's parameters;
- Paillier key sizes (:func:`check_paillier_key`): only the sizes the dataset's policy
  allows (``paillier_bits``); the keys themselves live in a bounded cache
  (:mod:`datafed.modes._paillier_keys`);
- quotas per requester (:class:`QuotaExceeded`): open protocol jobs (:mod:`nodes.query.jobs`)
  and pending intersection-sums (:mod:`nodes.psi.jobs`);
- shares per requester of the node itself (:mod:`nodes.fair`, :mod:`nodes.intercept`):
  calls in flight, compute threads, and the deadlines of every call.

The limits, their defaults and why are listed in ``docs/policy.md#limits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from datafed.hazmat import Packer
from datafed.modes import (
    CKKS_CONTEXT_CACHE,
    ProtectionMode,
    check_paillier_modulus,
)
from datafed.modes import (
    PAILLIER_KEY_CACHE as KEY_CACHE,
)
from datafed.modes import (
    PAILLIER_VALUE_BITS as VALUE_BITS,
)
from datafed.proto.v1 import modes_pb2, protocol_pb2, query_pb2
from datafed.query.components import Component
from datafed.query.spec import QuerySpec
from datafed.wire.serde import where_size
from nodes.config import DatasetPolicy, LimitsSection, NodeConfig
from nodes.errors import InvalidRequest, PermissionDenied, QuotaExceeded, RequestFault

if TYPE_CHECKING:
    from nodes.context import NodeContext

__all__ = [
    "ANSWER_MARGIN_BYTES",
    "Cost",
    "QuotaExceeded",
    "check_cost",
    "check_groups",
    "check_key_size",
    "check_paillier_key",
    "check_query_fields",
    "estimate",
    "install",
    "shares",
]

#: Room left in a message for the answer's receipt, ledger head and framing.
ANSWER_MARGIN_BYTES = 64 * 1024
#: Bytes one value takes on the wire (int64 varint: at most 10, plus a tag).
_PLAIN_VALUE_BYTES = 11
#: One ``Z_2^64`` ring element and its framing (shares, secagg masked vectors).
_RING_VALUE_BYTES = 9
#: Fewest CKKS slots per ciphertext at 128-bit security (N >= 8192, HE standard).
_CKKS_MIN_SLOTS = 4096
#: Smallest CKKS ciphertext at 128-bit security (N = 8192, two 60-bit primes, 2 polys).
_CKKS_MIN_CIPHERTEXT = 2 * 8192 * 2 * 8
#: Bytes a group key takes when no domain declares it (a plain GROUP BY).
_KEY_BYTES = 16


def install(ctx: NodeContext) -> None:
    """Apply ``[limits]`` to a node's job table, compute threads and key caches."""
    from nodes.fair import FairPool
    from nodes.query.jobs import JobTable

    lim = ctx.config.limits
    ctx.jobs = JobTable(max_jobs=lim.max_open_jobs, per_requester=lim.max_open_jobs_per_requester)
    ctx.fair.close()
    ctx.fair = FairPool(lim.compute_threads, lim.compute_threads_per_requester)
    KEY_CACHE.configure(
        max_bytes=lim.paillier_cache_bytes,
        per_requester=lim.paillier_keys_per_requester,
        idle_s=lim.paillier_key_idle_s,
    )
    CKKS_CONTEXT_CACHE.configure(
        max_bytes=lim.ckks_cache_bytes,
        per_requester=lim.ckks_contexts_per_requester,
        idle_s=lim.ckks_context_idle_s,
        requesters=lim.ckks_requesters,
    )


def shares(cfg: NodeConfig) -> str:
    """The node's shares and deadlines in one line (``check-config`` prints it)."""
    node, lim = cfg.node, cfg.limits
    return (
        f"shares: {node.max_concurrent_requests} analysts' calls in flight "
        f"({node.max_requests_per_requester} per requester, "
        f"{node.max_waiting_per_requester} more waiting), {node.reserved_requests} kept "
        f"for auditors, witnesses and nodes; requests within {node.request_timeout_s:g}s, "
        f"calls within {node.call_timeout_s:g}s; {lim.compute_threads} compute threads "
        f"({lim.compute_threads_per_requester} per requester)"
    )


def _over(what: str, size: int, limit: int, field: str) -> InvalidRequest:
    return InvalidRequest(f"{what} is {size:,}; this node accepts at most {limit:,} ({field})")


def check_query_fields(body: query_pb2.QueryRequestBody, limits: LimitsSection) -> None:
    """Refuse a query whose fields are larger than ``limits`` allow (before decoding them)."""
    checks = (
        ("the query spec in bytes", body.spec.ByteSize(), limits.max_spec_bytes, "max_spec_bytes"),
        (
            "the protection parameters in bytes (with a public context beside them)",
            len(body.protection.params) + len(body.public_context),
            limits.max_params_bytes,
            "max_params_bytes",
        ),
        (
            "the group domain in keys",
            len(body.protection.domain),
            limits.max_domain_keys,
            "max_domain_keys",
        ),
        (
            "the job statement in bytes",
            body.statement.ByteSize(),
            limits.max_statement_bytes,
            "max_statement_bytes",
        ),
    )
    for what, size, limit, field in checks:
        if size > limit:
            raise _over(what, size, limit, f"limits.{field}")
    if body.spec.HasField("where"):
        nodes, values = where_size(body.spec.where, limits.max_predicate_nodes)
        if nodes > limits.max_predicate_nodes:
            raise InvalidRequest(
                f"the WHERE clause has more than {limits.max_predicate_nodes:,} conditions "
                "(limits.max_predicate_nodes)"
            )
        if values > limits.max_where_values:
            raise _over(
                "the WHERE clause in values",
                values,
                limits.max_where_values,
                "limits.max_where_values",
            )
    for signoff in body.sign_offs:
        if signoff.ByteSize() > limits.max_signoff_bytes:
            raise _over(
                "a sign-off in bytes",
                signoff.ByteSize(),
                limits.max_signoff_bytes,
                "limits.max_signoff_bytes",
            )


@dataclass(frozen=True)
class Cost:
    """What answering a query would take at this node, estimated from the request alone."""

    groups: int
    components: int
    ciphertexts: int
    answer_bytes: int

    @property
    def values(self) -> int:
        """Values to compute and protect: groups x components."""
        return self.groups * self.components


def estimate(
    spec: QuerySpec,
    comps: Sequence[Component],
    mode: type[ProtectionMode],
    params: bytes,
    domain_keys: int | None,
    domain_bytes: int,
    roster: int,
    limits: LimitsSection,
) -> Cost:
    """Estimate a query's cost (see module docs); an undeclared GROUP BY counts ``max_groups``."""
    if domain_keys is not None:
        groups, key_bytes = domain_keys, domain_bytes
    elif spec.group_by:
        groups = limits.max_groups
        key_bytes = groups * _KEY_BYTES * len(spec.group_by)
    else:
        groups, key_bytes = 1, 0
    values = groups * len(comps)
    ciphertexts, payload = 0, values * _PLAIN_VALUE_BYTES
    if mode.name == "paillier":
        msg = _paillier_params(params)
        bits = int.from_bytes(msg.n, "big").bit_length()
        parties = max(1, len(msg.peer_certificates))
        try:
            packer = Packer(modulus_bits=bits, value_bits=VALUE_BITS, max_additions=parties)
        except ValueError as exc:
            raise InvalidRequest(f"Paillier parameters: {exc}") from exc
        ciphertexts = packer.plaintexts_for(values) if values else 0
        payload = ciphertexts * ((2 * bits + 7) // 8 + 4)
    elif mode.name == "ckks":
        context = _ckks_context_bytes(params)
        ciphertexts = math.ceil((values + 1) / _CKKS_MIN_SLOTS)
        # The aggregator receives one ciphertext per participant in one step.
        payload = ciphertexts * max(context, _CKKS_MIN_CIPHERTEXT) * roster
    elif mode.name == "shares":
        payload = (values + 1) * _RING_VALUE_BYTES * roster  # an aggregator's step request
    elif mode.name == "secagg":
        payload = (values + 1) * _RING_VALUE_BYTES
    return Cost(groups, len(comps), ciphertexts, payload + key_bytes)


def check_cost(cost: Cost, limits: LimitsSection, max_message_bytes: int) -> None:
    """Refuse a query whose estimated cost is over the node's limits (clear messages)."""
    if cost.components > limits.max_components:
        raise InvalidRequest(
            f"the query asks for {cost.components:,} values per group (each HISTOGRAM bin "
            f"counts one); this node computes at most {limits.max_components:,} "
            "(limits.max_components)"
        )
    if cost.values > limits.max_values:
        raise InvalidRequest(
            f"the answer would hold {cost.groups:,} group(s) x {cost.components:,} value(s) = "
            f"{cost.values:,} values; this node answers at most {limits.max_values:,} "
            "(limits.max_values): declare fewer groups or ask for fewer aggregates"
        )
    if cost.ciphertexts > limits.max_ciphertexts:
        raise InvalidRequest(
            f"the answer would take {cost.ciphertexts:,} ciphertexts; this node encrypts at "
            f"most {limits.max_ciphertexts:,} per answer (limits.max_ciphertexts)"
        )
    cap = limits.max_answer_bytes or max(0, max_message_bytes - ANSWER_MARGIN_BYTES)
    if cost.answer_bytes > cap:
        raise InvalidRequest(
            f"the answer would be about {cost.answer_bytes / 2**20:,.1f} MiB; this node sends "
            f"at most {cap / 2**20:,.1f} MiB (limits.max_answer_bytes, node.max_message_bytes)"
        )


def check_groups(groups: int, limits: LimitsSection) -> None:
    """After the aggregate: an undeclared GROUP BY (plain) returns at most ``max_groups``.

    Only modes that reveal the group keys run without a declared domain, so the refusal
    tells the analyst no more than the answer would have.
    """
    if groups > limits.max_groups:
        raise RequestFault(
            f"the query has more than {limits.max_groups:,} groups (limits.max_groups); "
            "declare a group domain or group by fewer columns"
        )


def check_paillier_key(params: bytes, policy: DatasetPolicy, dataset: str) -> int:
    """The analyst's modulus size, if the dataset's policy allows it (``paillier_bits``)."""
    n = int.from_bytes(_paillier_params(params).n, "big")
    try:
        check_paillier_modulus(n)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return check_key_size(n.bit_length(), policy, dataset)


def check_key_size(bits: int, policy: DatasetPolicy, dataset: str) -> int:
    """``bits`` if the dataset's policy allows Paillier keys of that size, else refuse."""
    if bits not in policy.paillier_bits:
        allowed = ", ".join(str(b) for b in sorted(policy.paillier_bits))
        raise PermissionDenied(
            f"a Paillier key of {bits} bits; dataset {dataset!r} accepts keys of {allowed} "
            "bits (policy paillier_bits)"
        )
    return bits


def _paillier_params(params: bytes) -> modes_pb2.PaillierParams:
    try:
        return modes_pb2.PaillierParams.FromString(params)
    except DecodeError as exc:
        raise InvalidRequest("malformed Paillier parameters") from exc


def _ckks_context_bytes(params: bytes) -> int:
    """The public context's size: inline, or as declared beside its digest.

    A declared size is checked against the context itself before admission
    (``datafed.modes.hold_context``).
    """
    try:
        msg = protocol_pb2.CkksParams.FromString(params)
    except DecodeError as exc:
        raise InvalidRequest("malformed CKKS parameters") from exc
    return len(msg.public_context) or msg.public_context_bytes
