"""A real three-node federation for the analyst's tests: NULLs, small groups, DP, descriptions.

Every node serves four datasets (SQLite files, real ``datafed-node serve`` processes, mTLS):

``visits``   a seeded random table of :mod:`tests.sql_cases` split over the nodes (k = 1);
``nulls``    issue 10's rows: node A holds ``cost`` NULL twice, node B 2.0 and 5.0 (k = 1);
``wards``    small groups for suppression (k = 3), with a description per column;
``dp_visits`` a person-level table under differential privacy (k = 10, epsilon 10 a
              query: little enough noise that an empty ward's noisy count never reaches k).

``alice`` may use all four; ``bob`` only ``visits``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from datafed.local.federation import PURPOSE, LocalFederation, NodeSpec
from tests import sql_cases
from tests.sql_cases import COLUMNS, NODES

SEED = "analyst-federation"
ALL = '["sum", "count", "avg", "var", "min", "max", "histogram"]'
MODES = '["paillier", "plain", "shares", "secagg", "ckks"]'
#: ward n: 9 + 2 rows (2 < k at node B), e: 5 at node A, s: 1 + 1, w: declared, no rows.
WARDS = {
    NODES[0]: [("n", 2023, 1.5, 1)] * 9 + [("e", 2023, 2.25, 2)] * 5 + [("s", 2023, 1.0, 1)],
    NODES[1]: [("n", 2023, 1.5, 1)] * 2 + [("s", 2023, 1.0, 1)],
    NODES[2]: [],
}
#: ward n: cost NULL twice at node A, 2.0 and 5.0 at node B; ward s: cost NULL everywhere;
#: ward e: 0.1 + 0.2 + 30810.07 (decimals a float sum would print with noise).
NULLS = {
    NODES[0]: [("n", 2023, None, None), ("n", 2023, None, None), ("s", 2023, None, 3)],
    NODES[1]: [("n", 2023, 2.0, 2), ("n", 2023, 5.0, 5), ("e", 2023, 0.1, 1)],
    NODES[2]: [("e", 2023, 0.2, 1), ("e", 2023, 30810.07, 1), ("s", 2023, None, 4)],
}
DESCRIPTIONS = (
    'description = "Hospital visits per ward [synthetic]"\n'
    'column_descriptions = { zone = "ward code", cost = "treatment cost in EUR [incl. VAT]" }\n'
)


def _policy(k: int, requesters: str = '["alice"]', extra: str = "") -> str:
    return (
        f"allowed_requesters = {requesters}\n"
        f'allowed_purposes = ["{PURPOSE}"]\n'
        f"allowed_aggregates = {ALL}\n"
        f"allowed_protections = {MODES}\n"
        f"min_group_size = {k}\n"
        f"{extra}"
        "[datasets.policy.group_domains]\n"
        'zone = ["n", "e", "s", "w"]\n'
        "year = [2022, 2023, 2024]\n"
    )


EXACT = "person_level = false  # synthetic rows about wards, for the arithmetic\n"
DP = (
    "[datasets.policy.dp]\n"
    "epsilon_per_query = 10.0\n"
    "budget_epsilon = 1000.0\n"
    'budget_scope = "requester"\n'
    "bounds = { cost = [-10.0, 20.0] }\n"
)


def visits_parts() -> dict[str, list[tuple[Any, ...]]]:
    """The ``visits`` rows of each node (seeded)."""
    rng = random.Random(SEED)
    return sql_cases.split(rng, sql_cases.table(rng, 150))


def dp_rows(node: str) -> list[tuple[Any, ...]]:
    """``dp_visits``: ward n has 200 rows per node, ward s one row at the first node."""
    rows: list[tuple[Any, ...]] = [("n", 2023, 3.0, 1)] * 200
    return rows + ([("s", 2023, 3.0, 1)] if node == NODES[0] else [])


def specs() -> list[NodeSpec]:
    """The three nodes (see module docs)."""
    visits = visits_parts()
    out = []
    for node in NODES:
        out.append(
            NodeSpec(
                name=node,
                agency=f"{node.split('-')[1].title()} District Health Office",
                datasets=[
                    ("visits", COLUMNS, visits[node]),
                    ("nulls", COLUMNS, NULLS[node]),
                    ("wards", COLUMNS, WARDS[node]),
                    ("dp_visits", COLUMNS, dp_rows(node)),
                ],
                policy_toml=_policy(1, '["alice", "bob"]', EXACT),
                dataset_policies={
                    "nulls": _policy(1, extra=EXACT),
                    "wards": _policy(3, extra=EXACT),
                    "dp_visits": _policy(10) + DP,
                },
            )
        )
    return out


def create(root: Path) -> LocalFederation:
    """Write the federation under ``root`` (not started); ``wards`` gets its descriptions."""
    fed = LocalFederation.create(root, specs(), analysts=("alice", "bob"))
    for node in fed.nodes:
        text = node.config.read_text()
        anchor = 'path = "data/wards.sqlite"\n'
        node.config.write_text(text.replace(anchor, anchor + DESCRIPTIONS))
    return fed
