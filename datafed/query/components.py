"""Components: the additive quantities a node computes so the client can finish aggregates.

``AVG(x)`` becomes ``sum(x)`` and ``count(*)``; ``VAR(x)`` adds ``sumsq(x)``.  Sums are
encoded in fixed point (``round(v * 2**bits)``) so that protected values add exactly;
counts are plain integers.  The client derives the same component list from the spec and
checks that every node returned exactly it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from datafed.query.spec import QuerySpec

__all__ = [
    "DEFAULT_FIXED_POINT_BITS",
    "Component",
    "components",
    "decode_fixed",
    "encode_fixed",
    "finalize",
    "histogram_bins",
    "output_labels",
]

#: Fractional bits of the fixed-point encoding (docs/parameters.md: scale 2^16).
DEFAULT_FIXED_POINT_BITS = 16

ComponentKind = Literal["sum", "count", "sumsq", "min", "max", "bin"]


@dataclass(frozen=True, order=True)
class Component:
    """One quantity a node reports per group (``bin``: rows with ``lo <= x < hi``)."""

    kind: ComponentKind
    column: str
    lo: float = 0.0
    hi: float = 0.0
    #: ``bin`` only: the last bin of a histogram also counts ``x == hi``.
    closed: bool = False

    @property
    def label(self) -> str:
        """Wire label, e.g. ``sum(bursts)``, ``count(*)`` or ``bin(x)[0,5)``."""
        if self.kind == "bin":
            return f"bin({self.column})[{self.lo:g},{self.hi:g}{']' if self.closed else ')'}"
        return f"{self.kind}({self.column})"

    @property
    def additive(self) -> bool:
        """Whether totals across nodes are sums of the nodes' values."""
        return self.kind in ("sum", "count", "sumsq", "bin")

    @property
    def scaled(self) -> bool:
        """Whether the value is fixed-point encoded (everything but counts)."""
        return self.kind not in ("count", "bin")


def histogram_bins(column: str, edges: Sequence[float]) -> tuple[Component, ...]:
    """The ``bin`` components of ``HISTOGRAM(column, *edges)``."""
    last = len(edges) - 2
    return tuple(
        Component("bin", column, edges[i], edges[i + 1], i == last) for i in range(len(edges) - 1)
    )


def components(spec: QuerySpec) -> tuple[Component, ...]:
    """Return the components needed for ``spec``'s aggregates, without duplicates."""
    out: dict[Component, None] = {}
    for agg in spec.aggregates:
        col = agg.column
        if agg.func == "count":
            out[Component("count", "*" if col == "*" else col)] = None
        elif agg.func == "sum":
            out[Component("sum", col)] = None
        elif agg.func == "avg":
            out[Component("sum", col)] = None
            out[Component("count", col)] = None
        elif agg.func == "var":
            out[Component("sum", col)] = None
            out[Component("sumsq", col)] = None
            out[Component("count", col)] = None
        elif agg.func == "histogram":
            out.update(dict.fromkeys(histogram_bins(col, agg.bins)))
        else:
            out[Component(agg.func, col)] = None
    return tuple(out)


def encode_fixed(value: float | int | None, bits: int) -> int:
    """Encode a number as a fixed-point integer (``None`` as 0); ValueError if not a number."""
    if value is None:
        return 0
    if isinstance(value, (str, bytes, bytearray, memoryview)):  # MIN/MAX over a text column
        raise ValueError(f"cannot aggregate {type(value).__name__} values as numbers")
    if isinstance(value, int):
        return value << bits
    if not math.isfinite(value):
        raise ValueError(f"cannot encode non-finite value {value!r}")
    return round(value * (1 << bits))


def decode_fixed(value: int, bits: int) -> float:
    """Decode a fixed-point integer."""
    return value / (1 << bits)


def finalize(
    spec: QuerySpec, totals: Mapping[Component, int], bits: int
) -> tuple[float | int | None, ...]:
    """Compute each aggregate of ``spec`` from the decoded component totals of one group."""

    def val(c: Component) -> float | int:
        raw = totals[c]
        return raw if not c.scaled else decode_fixed(raw, bits)

    out: list[float | int | None] = []
    for agg in spec.aggregates:
        col = agg.column
        if agg.func == "count":
            out.append(int(val(Component("count", col))))
        elif agg.func == "sum":
            out.append(val(Component("sum", col)))
        elif agg.func == "avg":
            n = val(Component("count", col))
            out.append(val(Component("sum", col)) / n if n else None)
        elif agg.func == "var":
            n = val(Component("count", col))
            s, sq = val(Component("sum", col)), val(Component("sumsq", col))
            out.append(max(0.0, (sq - s * s / n) / (n - 1)) if n > 1 else None)
        elif agg.func == "histogram":
            out.extend(int(totals[c]) for c in histogram_bins(col, agg.bins))
        else:
            out.append(val(Component(agg.func, col)))
    return tuple(out)


def output_labels(spec: QuerySpec) -> tuple[str, ...]:
    """Result column labels of ``spec``'s aggregates (a histogram gives one per bin)."""
    return tuple(label for agg in spec.aggregates for label in agg.labels)
