"""``datafed intersection-sum``: the analyst's command for a private cross-agency join.

Registered on the main ``datafed`` app by :func:`register`; the protocol and who learns
what are described in :mod:`datafed.psi`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from datafed.cli.progress import live_steps

if TYPE_CHECKING:
    from datafed.psi import IntersectionSumResult

__all__ = ["register"]

out = Console(soft_wrap=True)
err = Console(stderr=True)


def intersection_sum(
    federation: Path = typer.Option(..., "--federation", "-f", help="federation file (fed.toml)"),
    ids: str = typer.Option(
        ...,
        "--ids",
        help="identifier side as node:dataset:id_column, e.g. tax-bureau:taxpayers:person_id",
    ),
    values: str = typer.Option(
        ...,
        "--values",
        help="value side as node:dataset:id_column:value_column, "
        "e.g. city-bank:loans:person_id:amount",
    ),
    purpose: str = typer.Option(..., "--purpose", help="declared purpose, checked by both nodes"),
    legal_basis: str = typer.Option("", "--legal-basis", help="legal basis recorded in ledgers"),
    timeout_s: float = typer.Option(
        0.0, "--timeout", help="deadline per step in seconds (default: at least 600)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr"),
) -> None:
    """Sum one node's values over the identifiers it shares with another node.

    You learn the intersection size and the sum; neither node learns the other's
    identifiers, and both record the job in their ledgers.
    """
    from datafed.client import Federation
    from datafed.errors import QueryError
    from datafed.psi import parse_ids, parse_values

    try:
        id_ref, value_ref = parse_ids(ids), parse_values(values)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    fed = Federation.from_file(federation)
    with live_steps(err, quiet=quiet) as progress:
        result = fed.intersection_sum(
            (id_ref.node, id_ref.dataset, id_ref.column),
            (value_ref.node, value_ref.dataset, value_ref.id_column, value_ref.value_column),
            purpose=purpose,
            legal_basis=legal_basis,
            timeout_s=timeout_s or None,
            progress=progress,
        )
    _print_result(result, value_ref.dataset, value_ref.value_column, as_json)


def _print_result(result: IntersectionSumResult, dataset: str, column: str, as_json: bool) -> None:
    """The size, the sum and both ledger heads, as JSON or as lines."""
    ledgers = [
        {
            "node": h.node,
            "size": h.size,
            "root_hash": h.root_hash.hex(),
            "entries": list(h.entry_indexes),
        }
        for h in result.ledgers
    ]
    if as_json:
        payload = {
            "intersection_size": result.intersection_size,
            "sum": result.sum,
            "sum_fixed": str(result.sum_fixed),
            "fixed_point_bits": result.fixed_point_bits,
            "job_id": result.job_id,
            "ledgers": ledgers,
        }
        print(json.dumps(payload))
        return
    out.print(f"intersection-sum (job {result.job_id})")
    out.print(f"  intersection size: {result.intersection_size}")
    out.print(f"  sum of {dataset}.{column}: {result.sum:,.4f}")
    for h in ledgers:
        out.print(
            f"  ledger {h['node']}: size {h['size']}, root {str(h['root_hash'])[:16]}…, "
            f"entries {h['entries']}"
        )


def register(app: typer.Typer) -> None:
    """Add the ``intersection-sum`` command to ``app``.

    Parameters
    ----------
    app
        The ``datafed`` command-line application.
    """
    app.command("intersection-sum")(intersection_sum)
