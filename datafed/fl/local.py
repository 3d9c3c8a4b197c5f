"""District flood offices for a local federation (demo, examples, tests).

Each office is a :class:`~datafed.local.federation.NodeSpec` serving its own seeded, non-IID
``flood_readings`` table (:mod:`datafed.fl.synthetic`) under a policy that lets analyst
``alice`` train flood-risk models (``allowed_operations`` includes ``"training"``) and
run the usual protected queries. Start them with
:class:`~datafed.local.federation.LocalFederation`; add Flower with
:class:`nodes.fl.local.LocalFlower`.
"""

from __future__ import annotations

from datafed.fl.synthetic import FLOOD_COLUMNS, FLOOD_TABLE, flood_profiles, flood_rows
from datafed.local.federation import NodeSpec

__all__ = ["FLOOD_PURPOSE", "flood_node_specs", "flood_policy"]

#: The purpose the flood offices' policy allows for training.
FLOOD_PURPOSE = "flood-risk-model"


def flood_policy(
    *,
    training: bool = True,
    requesters: tuple[str, ...] = ("alice",),
    min_group_size: int = 5,
    models: tuple[str, ...] = ("mlp",),
) -> str:
    """The ``[datasets.policy]`` body of a flood office's readings table.

    ``models`` become ``allowed_models``: the built-in ``"mlp"`` and any model factories
    (``"package.module:factory"``) the office lets its SuperNode run.
    """
    operations = '["query", "training"]' if training else '["query"]'
    names = ", ".join(f'"{r}"' for r in requesters)
    allowed = ", ".join(f'"{m}"' for m in models)
    return (
        f"allowed_requesters = [{names}]\n"
        f'allowed_purposes = ["{FLOOD_PURPOSE}"]\n'
        f"allowed_operations = {operations}\n"
        f"allowed_models = [{allowed}]\n"
        f"min_group_size = {min_group_size}\n"
        "person_level = false  # gauge readings describe places, not persons\n"
    )


def flood_node_specs(n: int = 3, seed: int = 7, policy: str | None = None) -> list[NodeSpec]:
    """``n`` district flood offices (``flood-coastal``, ``flood-riverside``, ...)."""
    text = flood_policy() if policy is None else policy
    return [
        NodeSpec(
            p.name,
            f"{p.name.removeprefix('flood-').title()} District Flood Office",
            [(FLOOD_TABLE, FLOOD_COLUMNS, flood_rows(p, seed, i))],
            text,
        )
        for i, p in enumerate(flood_profiles(n, seed))
    ]
