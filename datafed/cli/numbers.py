"""One number format for the analyst's tables: thousands separators, no false precision.

Every number in a ``datafed`` table is written with thousands separators (``184,642``,
``1,234.5``). A value that carries noise -- differential privacy's (its 1-sigma, from the
result) or CKKS's approximation (its error bound) -- is rounded to the decimal place of
the noise's leading digit: with a 1-sigma of 2.8 a sum reads ``1,797``, not
``1,797.3125``; with 0.04, ``12.35``. The digits beyond carry no information about the
data. ``--json`` keeps every value as released (docs/analyst.md).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["cell", "precision_step"]


def precision_step(noise: float | None) -> Decimal | None:
    """The rounding step for a value with ``noise`` (1-sigma or error bound): a power of ten.

    ``None`` (no noise, or none given) keeps the value's own digits.
    """
    if noise is None or not math.isfinite(noise) or noise <= 0:
        return None
    return Decimal(1).scaleb(math.floor(math.log10(noise)))


def _plain(d: Decimal) -> str:
    text = f"{d:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def cell(v: object, step: Decimal | None = None) -> str:
    """One table cell: NULL, text as is, numbers with separators (rounded to ``step``)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    d = Decimal(v) if isinstance(v, int) else Decimal(str(v)) if isinstance(v, float) else v
    if step is not None:
        d = (
            d.quantize(step, rounding=ROUND_HALF_EVEN)
            if step < 1
            else ((d / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * step)
        )
    elif isinstance(v, float):
        d = d.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    return _plain(d)
