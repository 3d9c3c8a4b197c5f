"""Components: the additive quantities a node computes so the client can finish aggregates.

``AVG(x)`` becomes ``sum(x)`` and ``count(x)``; ``VAR(x)`` adds ``sumsq(x)``.  Sums are
encoded in fixed point (``round(v * 2**bits)``) so that protected values add exactly;
counts are plain integers.  The client derives the same component list from the spec and
checks that every node returned exactly it.

NULL semantics (SQL's, over the union of every node's rows; ``docs/analyst.md``): an
aggregate ignores NULLs, and ``SUM``, ``AVG``, ``MIN`` and ``MAX`` of a group with no
non-null value are NULL (``VAR`` needs two values; ``COUNT`` is 0).  A node reports a NULL
sum, minimum or maximum as 0, so every aggregate that can be NULL carries the non-null
count of its column, ``count(x)``, under the same protection as its value: the client
reads NULL where that total is 0 (under DP: below 1, post-processing of the noisy count),
and a node whose ``count(x)`` is 0 takes no part in a MIN/MAX merge.  One ``count(x)``
serves every aggregate of ``x``; ``COUNT(*)`` cannot stand in for it (rows where ``x`` is
NULL count there).

A node reports exactly these components per group, nothing else: no node withholds or
flags a group of its own (``docs/invisibility.md``); a group under ``min_group_size`` is
decided on the combined count, by the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Literal

from datafed.query.spec import QuerySpec

__all__ = [
    "DEFAULT_FIXED_POINT_BITS",
    "Component",
    "components",
    "decode_fixed",
    "encode_fixed",
    "finalize",
    "finalize_exact",
    "fixed_decimal",
    "group_rows_count",
    "histogram_bins",
    "output_labels",
]

#: Fractional bits of the fixed-point encoding (docs/parameters.md: scale 2^16).
DEFAULT_FIXED_POINT_BITS = 16

ComponentKind = Literal["sum", "count", "sumsq", "min", "max", "bin"]
Exact = Decimal | int | float | None


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
    """The components a store computes for ``spec``'s aggregates, without duplicates.

    Every aggregate that can be NULL brings its column's non-null count (module docs).
    """
    out: dict[Component, None] = {}
    for agg in spec.aggregates:
        col = agg.column
        if agg.func == "count":
            out[Component("count", col)] = None
        elif agg.func == "histogram":
            out.update(dict.fromkeys(histogram_bins(col, agg.bins)))
        elif agg.func in ("sum", "avg"):
            out[Component("sum", col)] = None
            out[Component("count", col)] = None
        elif agg.func == "var":
            out[Component("sum", col)] = None
            out[Component("sumsq", col)] = None
            out[Component("count", col)] = None
        else:  # min, max
            out[Component("min" if agg.func == "min" else "max", col)] = None
            out[Component("count", col)] = None
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


def fixed_decimal(value: int, bits: int, roundings: int = 1) -> Decimal:
    """The shortest decimal within the rounding of the fixed-point integer ``value``.

    ``value / 2**bits`` is a finite decimal, but one with up to ``bits`` digits that the
    data did not have (30810.07 is stored as 30810.07000732421875).  Each encoding rounds
    by at most half a unit (2^-(bits+1)); a total of ``roundings`` encoded values (a SUM
    over that many nodes) is within ``roundings`` half-units of the true total.  This
    returns the decimal with the fewest digits in that interval -- the way ``repr`` prints
    a float -- so decimal inputs come back as written (0.1 + 0.2 + 30810.07 over three
    nodes is 30810.37).  Integers come back without a fraction.
    """
    with localcontext() as ctx:
        ctx.prec = 80
        exact = Decimal(value) / (1 << bits)
        half = Decimal(max(roundings, 1)) / (2 << bits)
        for digits in range(bits + 1):
            short = exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)
            if abs(short - exact) < half:
                return short + 0  # + 0 turns -0 into 0
        return exact


def _count(totals: Mapping[Component, int], column: str) -> int:
    return int(totals[Component("count", column)])


def finalize_exact(
    spec: QuerySpec, totals: Mapping[Component, int], bits: int, nodes: int = 1
) -> tuple[Exact, ...]:
    """Each aggregate of ``spec`` from one group's component totals, exactly.

    SUM, MIN and MAX are :class:`~decimal.Decimal` (:func:`fixed_decimal`; a SUM adds one
    rounding per node of ``nodes``), COUNT and histogram bins ``int``, AVG and VAR
    ``float``; NULL (``None``) where SQL has NULL: no non-null value (a non-null count
    below 1), or fewer than two for VAR.
    """
    out: list[Exact] = []
    for agg in spec.aggregates:
        col = agg.column
        if agg.func == "count":
            out.append(_count(totals, col))
            continue
        if agg.func == "histogram":
            out.extend(int(totals[c]) for c in histogram_bins(col, agg.bins))
            continue
        n = _count(totals, col)
        if agg.func == "sum" or agg.func == "min" or agg.func == "max":
            raw = totals[Component(agg.func, col)]
            roundings = nodes if agg.func == "sum" else 1
            out.append(fixed_decimal(raw, bits, roundings) if n >= 1 else None)
            continue
        s = decode_fixed(totals[Component("sum", col)], bits)
        if agg.func == "avg":
            out.append(s / n if n >= 1 else None)
        else:  # var: the sample variance, as PostgreSQL's VAR_SAMP
            sq = decode_fixed(totals[Component("sumsq", col)], bits)
            out.append(max(0.0, (sq - s * s / n) / (n - 1)) if n >= 2 else None)
    return tuple(out)


def finalize(
    spec: QuerySpec, totals: Mapping[Component, int], bits: int, nodes: int = 1
) -> tuple[float | int | None, ...]:
    """:func:`finalize_exact` with every decimal as the nearest ``float``."""
    return tuple(
        float(v) if isinstance(v, Decimal) else v for v in finalize_exact(spec, totals, bits, nodes)
    )


def group_rows_count(spec: QuerySpec, totals: Mapping[Component, int]) -> int | None:
    """The best count of a group's rows the components hold (``None``: none do).

    ``count(*)`` when the query has it, else the largest non-null count, else the sum of
    the histogram bins (each is a row count of its own).  Used to flag small groups of DP
    datasets from their noisy counts (``docs/policy.md``).
    """
    star = Component("count", "*")
    if star in totals:
        return int(totals[star])
    counts = [int(v) for c, v in totals.items() if c.kind == "count"]
    if counts:
        return max(counts)
    bins = [int(v) for c, v in totals.items() if c.kind == "bin"]
    return sum(bins) if bins else None


def output_labels(spec: QuerySpec) -> tuple[str, ...]:
    """Result column labels of ``spec``'s aggregates (a histogram gives one per bin)."""
    return tuple(label for agg in spec.aggregates for label in agg.labels)
