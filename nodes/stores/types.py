"""Typed columns: one small type system shared by every engine (docs/stores.md).

A dataset's columns each have one of four types: ``integer``, ``real``, ``text`` or
``boolean``.  The type comes from the database schema where it has real types, and from
``types`` in ``node.toml`` where it does not (a CSV imported as TEXT).  Everything a query
compares -- group keys, group domains, predicate literals, DP bounds -- is compared as a
value of that type, so the TEXT ``'2023'`` of a column declared ``integer`` groups,
filters and clamps as the integer 2023 on every engine.

Stored text is accepted for a non-text type only if it matches the type's pattern below
(checked by ``check-config`` and at ``serve``), so a cast in the query is exact: no engine
silently turns ``'12abc'`` into 12 or ``'2023.5'`` into 2024.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from datafed.query.spec import AllOf, AnyOf, Between, Comparison, InList, Not, Predicate
from nodes.errors import InvalidRequest

__all__ = [
    "NUMERIC",
    "PATTERNS",
    "ColumnType",
    "count_literals",
    "literal",
    "python_value",
    "terms",
    "value_fits",
]

ColumnType = Literal["integer", "real", "text", "boolean"]
#: Types that SUM, MIN, MAX, VAR and HISTOGRAM accept (a boolean counts as 0/1).
NUMERIC: frozenset[str] = frozenset({"integer", "real", "boolean"})

#: What stored text must look like to be read as each type (POSIX ERE: the same text
#: works in SQLite's REGEXP, DuckDB, PostgreSQL ``~`` and Spark ``rlike``).
PATTERNS: dict[str, str] = {
    "integer": r"^-?[0-9]{1,18}$",
    "real": r"^-?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]{1,3})?$",
    "boolean": r"^(0|1|true|false|TRUE|FALSE|True|False)$",
}
_TRUE = {"1", "true"}
_RE = {k: re.compile(v) for k, v in PATTERNS.items()}


def python_value(ctype: str, value: Any) -> Any:
    """Convert a value read from an engine to the column type's Python type (None stays)."""
    if value is None:
        return None
    if ctype == "integer":
        return int(value)
    if ctype == "real":
        return float(value)
    if ctype == "boolean":
        if isinstance(value, str):
            return value.lower() in _TRUE
        return bool(value)
    return str(value)


def value_fits(ctype: str, value: object) -> bool:
    """Whether a declared value (a group domain entry, a literal) is of column type ``ctype``.

    ``int`` fits ``real``; ``bool`` fits only ``boolean``; text fits only ``text``.
    """
    if ctype == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if ctype == "integer":
        return isinstance(value, int)
    if ctype == "real":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


def literal(ctype: str, column: str, value: object) -> bool | int | float | str:
    """Coerce a query literal to the column's type, or refuse it with InvalidRequest.

    A string literal is read as a number or boolean if it is one (``year = '2023'``), as SQL
    would; a number compared with a text column is refused rather than compared as text on
    one engine and failed on another.
    """
    if isinstance(value, str) and ctype != "text":
        pattern = _RE[ctype]
        text = value.strip()
        if not pattern.fullmatch(text):
            raise InvalidRequest(f"literal {value!r} is not a {ctype} (column {column!r})")
        if ctype == "integer":
            return int(text)
        if ctype == "real":
            return float(text)
        return text.lower() in _TRUE
    if ctype == "text":
        if not isinstance(value, str):
            raise InvalidRequest(f"column {column!r} is text; compare it with a quoted string")
        return value
    if ctype == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise InvalidRequest(f"literal {value!r} is not a boolean (column {column!r})")
    if isinstance(value, bool):
        raise InvalidRequest(f"literal {value!r} is not a {ctype} (column {column!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"literal {value!r} is not finite (column {column!r})")
    if ctype == "real":
        return float(value)  # type: ignore[arg-type]
    assert isinstance(value, (int, float))
    return value  # an integer column compares with an int or a float as numbers


def terms(p: Predicate | None) -> Iterator[Comparison | InList | Between]:
    """The comparisons of a predicate, below its AND, OR and NOT (depth-first)."""
    stack = [p] if p is not None else []
    while stack:
        q = stack.pop()
        if isinstance(q, (AllOf, AnyOf)):
            stack.extend(q.items)
        elif isinstance(q, Not):
            stack.append(q.item)
        else:
            yield q


def count_literals(p: Predicate | None) -> int:
    """How many literal values a predicate holds (bounded before it reaches a database)."""
    if p is None:
        return 0
    if isinstance(p, (AllOf, AnyOf)):
        return sum(count_literals(i) for i in p.items)
    if isinstance(p, Not):
        return count_literals(p.item)
    if isinstance(p, InList):
        return len(p.values)
    if isinstance(p, Between):
        return 2
    assert isinstance(p, Comparison)
    return 1


def depth(p: Predicate | None) -> int:
    """Nesting depth of a predicate (engines bound their expression depth)."""
    if p is None:
        return 0
    if isinstance(p, (AllOf, AnyOf)):
        return 1 + max(depth(i) for i in p.items)
    if isinstance(p, Not):
        return 1 + depth(p.item)
    return 1


def sort_key(key: Sequence[Any]) -> tuple[tuple[bool, Any], ...]:
    """Order group keys the same way on every engine (NULL last)."""
    return tuple((v is None, v if v is not None else 0) for v in key)
