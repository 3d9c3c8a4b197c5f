"""The group domain of a GROUP BY: the declared keys and one remainder group.

A node never takes the groups it reports from the analyst (``docs/invisibility.md``): the
keys of a protected or differentially private GROUP BY are the cross product of the
values the dataset's policy declares for each GROUP BY column (``group_domains``, public
metadata), each column's values in one canonical order (numbers before text, so two
nodes that declare the same values in another order agree), followed by one
**remainder** group that holds every row whose key is NULL or not among the declared
values -- so no row vanishes from an answer and no analyst-chosen key reaches a node.
Client and node build the domain with the same function; a node refuses a request whose
domain is not exactly its own.

The remainder's key is all NULL: declared values are never NULL (the policy's
``group_domains`` hold booleans, numbers and strings), so the key is unambiguous.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from datafed.errors import QueryError
from datafed.query.spec import Scalar

__all__ = ["MAX_DOMAIN_GROUPS", "GroupKey", "declared_domain", "is_remainder", "remainder_key"]

GroupKey = tuple[Scalar | None, ...]
#: Most groups a GROUP BY domain may span (the remainder included).
MAX_DOMAIN_GROUPS = 10_000


def remainder_key(width: int) -> GroupKey:
    """The remainder group's key for a GROUP BY of ``width`` columns (all NULL)."""
    return (None,) * width


def is_remainder(key: GroupKey) -> bool:
    """Whether ``key`` is the remainder group's (a GROUP BY key, not the empty key)."""
    return bool(key) and all(v is None for v in key)


def declared_domain(
    group_by: Sequence[str],
    declared: Mapping[str, Sequence[Scalar]],
    *,
    limit: int = MAX_DOMAIN_GROUPS,
) -> list[GroupKey]:
    """The domain of a GROUP BY over ``declared`` values: their product, then the remainder.

    Without a GROUP BY the domain is the one empty key (the whole result is one group).

    Raises
    ------
    QueryError
        If a GROUP BY column has no declared values, or the domain spans more than
        ``limit`` groups.
    """
    if not group_by:
        return [()]
    missing = [c for c in group_by if not declared.get(c)]
    if missing:
        raise QueryError(
            f"GROUP BY {missing[0]} needs the values of {missing[0]!r} declared in the "
            "dataset's policy (group_domains)"
        )
    size = 1
    for col in group_by:
        size *= len(declared[col])
    if size + 1 > limit:
        raise QueryError(f"GROUP BY spans {size + 1} groups (with the remainder); at most {limit}")
    columns = [sorted(dict.fromkeys(declared[c]), key=_order) for c in group_by]
    keys: list[GroupKey] = [tuple(k) for k in itertools.product(*columns)]
    return [*keys, remainder_key(len(group_by))]


def _order(v: Scalar) -> tuple[int, float, str]:
    if isinstance(v, (bool, int, float)):
        return (0, float(v), "")
    return (1, 0.0, str(v))
