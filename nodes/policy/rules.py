"""The node's policy engine: may this requester use this dataset, this way, for this purpose.

Evaluation is pure (no I/O) and returns a :class:`Decision`; the servicer records every
decision in the ledger before any data is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from datafed.pki import Identity
from datafed.query.spec import QuerySpec
from nodes.config import DatasetPolicy, NodeConfig
from nodes.errors import InvalidRequest, NodeError, NotFound, PermissionDenied
from nodes.store import GroupRow

__all__ = ["Decision", "apply_min_group_size", "check_query"]


@dataclass(frozen=True)
class Decision:
    """Outcome of a policy check; ``error`` is set when the request is refused."""

    allowed: bool
    reason: str
    error: NodeError | None = None

    @classmethod
    def deny(cls, error: NodeError) -> Decision:
        """A refusal carrying the error to send."""
        return cls(allowed=False, reason=str(error), error=error)


def _require_role(identity: Identity, role: str) -> None:
    if identity.role != role:
        raise PermissionDenied(f"role {identity.role!r} may not run queries; need {role!r}")


def _check_access(policy: DatasetPolicy, who: str, purpose: str, dataset: str) -> None:
    if who not in policy.allowed_requesters:
        raise PermissionDenied(f"requester {who!r} is not allowed to use dataset {dataset!r}")
    if purpose not in policy.allowed_purposes:
        raise PermissionDenied(f"purpose {purpose!r} is not allowed for dataset {dataset!r}")


def check_query(
    config: NodeConfig,
    columns: dict[str, Sequence[str]],
    identity: Identity,
    purpose: str,
    spec: QuerySpec,
    protection: str,
) -> Decision:
    """Evaluate a query against the dataset's policy.

    Parameters
    ----------
    config
        The node configuration (datasets and their policies).
    columns
        Exposed columns per dataset, as the store found them.
    identity
        The authenticated caller (from its certificate).
    purpose
        The declared purpose from the signed request.
    spec
        The query.
    protection
        The requested protection mode.
    """
    try:
        _require_role(identity, "analyst")
        ds = config.dataset(spec.dataset)
        if ds is None:
            raise NotFound(f"unknown dataset {spec.dataset!r}")
        policy = ds.policy
        if "query" not in policy.allowed_operations:
            raise PermissionDenied(f"dataset {spec.dataset!r} does not answer aggregate queries")
        _check_access(policy, identity.name, purpose, spec.dataset)
        exposed = set(columns[spec.dataset])
        unknown = sorted(spec.columns() - exposed)
        if unknown:
            raise InvalidRequest(f"unknown column {unknown[0]!r} in dataset {spec.dataset!r}")
        allowed_cols = (
            set(policy.allowed_columns) if policy.allowed_columns is not None else exposed
        )
        refused = sorted(spec.columns() - allowed_cols)
        if refused:
            raise PermissionDenied(f"column {refused[0]!r} of {spec.dataset!r} is not allowed")
        for agg in spec.aggregates:
            if agg.func not in policy.allowed_aggregates:
                raise PermissionDenied(
                    f"aggregate {agg.func.upper()} is not allowed on {spec.dataset!r}"
                )
        if protection not in policy.allowed_protections:
            raise PermissionDenied(
                f"protection {protection!r} is not allowed for {spec.dataset!r} "
                f"(allowed: {', '.join(policy.allowed_protections)})"
            )
    except NodeError as exc:
        return Decision.deny(exc)
    return Decision(allowed=True, reason="policy allows")


def apply_min_group_size(
    policy: DatasetPolicy, groups: list[GroupRow]
) -> tuple[list[GroupRow], int]:
    """Suppress (or refuse) groups with fewer rows than the policy's minimum.

    Returns the groups to release and how many were suppressed; raises
    :class:`PermissionDenied` when the policy says to refuse instead.
    """
    k = policy.min_group_size
    small = [g for g in groups if g.rows < k]
    if small and policy.small_groups == "refuse":
        raise PermissionDenied(f"{len(small)} group(s) have fewer than {k} rows")
    return [g for g in groups if g.rows >= k], len(small)
