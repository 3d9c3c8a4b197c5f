"""Turning an engine's result rows into :class:`GroupRow` values, the same way everywhere.

Keys become values of their column's type; counts become ints; sums, minima and maxima
are fixed-point encoded from exact ints where the engine summed integers (a ``Decimal``
from PostgreSQL or a ``HUGEINT`` from DuckDB included), so that the same rows give the
same :class:`GroupRow` on every engine.  Groups are sorted by key.

NULL: an engine's SUM, MIN or MAX of a group without a non-null value is NULL; it is
encoded as 0, and the column's non-null count -- which every aggregate that can be NULL
brings along (:func:`datafed.query.components.components`) -- is 0 beside it, so the
client answers NULL and a MIN/MAX merge across nodes skips it (no phantom 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from datafed.query.components import Component, encode_fixed
from nodes.errors import InvalidRequest, NodeError
from nodes.stores.base import Column, GroupRow
from nodes.stores.types import python_value, sort_key

__all__ = ["group_rows", "number"]


def number(value: Any) -> int | float | None:
    """An engine's numeric result as ``int`` (when integral and exact) or ``float``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int):
        return value
    return float(value)


def _encode(c: Component, value: Any, bits: int) -> int:
    if not c.scaled:
        return int(value or 0)
    try:
        return encode_fixed(number(value), bits)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{c.label} is not a finite number in this group") from exc


def group_rows(
    rows: Sequence[Sequence[Any]],
    key_types: Sequence[str],
    comps: Sequence[Component],
    columns: Mapping[str, Column],
    bits: int,
) -> list[GroupRow]:
    """``rows`` are ``(*key, row count, *component values)`` as an engine returned them."""
    nk = len(key_types)
    out = []
    for row in rows:
        count = int(row[nk])
        if count == 0 and nk == 0:
            continue  # an aggregate without GROUP BY over no rows still yields one row
        try:
            key = tuple(python_value(t, v) for t, v in zip(key_types, row[:nk], strict=True))
        except (TypeError, ValueError):
            # The data changed under the node since its type check at start.
            raise NodeError(
                "a stored group key does not fit its column's type (run check-config)"
            ) from None
        values = tuple(_encode(c, v, bits) for c, v in zip(comps, row[nk + 1 :], strict=True))
        out.append(GroupRow(key=key, rows=count, values=values))
    out.sort(key=lambda g: sort_key(g.key))
    return out
