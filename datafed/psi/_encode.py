"""How both nodes turn database rows into identifier encodings and fixed-point values.

Both sides must encode an identifier identically or the intersection silently misses it:
text is UTF-8, integers their decimal text (so ``"42"`` and ``42`` match), bytes as they
are.  Rows without an identifier take no part.  On the values side several rows with one
identifier are summed first, so the result is the sum of *all* values of every identifier
in the intersection and the size counts distinct identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datafed.query.components import encode_fixed

__all__ = ["encode_identifier", "identifier_set", "value_pairs"]


def encode_identifier(value: Any) -> bytes | None:
    """Return the canonical encoding of one identifier, ``None`` for a missing one.

    Parameters
    ----------
    value
        A database value: str, int or bytes.

    Returns
    -------
    bytes or None
        The encoding.

    Raises
    ------
    TypeError
        For floats, booleans and other types that make poor identifiers.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool) or not isinstance(value, (int, bytes)):
        raise TypeError(f"identifiers must be text, integers or bytes, got {type(value).__name__}")
    return str(value).encode() if isinstance(value, int) else value


def identifier_set(values: Iterable[Any]) -> list[bytes]:
    """Distinct canonical identifiers of a column (missing ones dropped).

    Parameters
    ----------
    values
        The column's values.

    Returns
    -------
    list of bytes
        Distinct encodings, in first-seen order.
    """
    out = (encode_identifier(v) for v in values)
    return list(dict.fromkeys(e for e in out if e is not None))


def value_pairs(rows: Iterable[tuple[Any, Any]], bits: int) -> list[tuple[bytes, int]]:
    """``(identifier, fixed-point value)`` pairs, one per identifier, values summed.

    Parameters
    ----------
    rows
        ``(identifier, value)`` rows; a missing value counts as zero.
    bits
        Fractional bits of the fixed-point encoding.

    Returns
    -------
    list of (bytes, int)
        One pair per distinct identifier.

    Raises
    ------
    TypeError
        For a value that is not a number.
    ValueError
        For a non-finite value.
    """
    sums: dict[bytes, int] = {}
    for ident, value in rows:
        key = encode_identifier(ident)
        if key is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            raise TypeError(f"values must be numbers, got {type(value).__name__}")
        sums[key] = sums.get(key, 0) + encode_fixed(value, bits)
    return list(sums.items())
