"""The names of logs and witnesses: one definition for nodes, clients and auditors.

A node's ledger is a C2SP transparency log whose origin line is ``datafed/ledger/<node>``;
a node that witnesses other logs cosigns as ``datafed/witness/<node>``. Everyone derives
the names from the node's certificate name with these two functions.
"""

from __future__ import annotations

__all__ = ["ledger_origin", "witness_name"]


def ledger_origin(node: str) -> str:
    """The C2SP origin of ``node``'s ledger."""
    return f"datafed/ledger/{node}"


def witness_name(node: str) -> str:
    """The key name under which ``node`` cosigns other logs as a witness."""
    return f"datafed/witness/{node}"
