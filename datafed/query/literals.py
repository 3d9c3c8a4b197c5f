"""Literals of HAVING, given the type of what they are compared with.

WHERE's literals take their column's type at the nodes (``nodes/stores/types.py``);
HAVING runs at the client (:mod:`datafed.query.post`) and gives its literals types by
the same rules, refusing wherever SQLite would compare otherwise: SQLite applies a
column's affinity to a literal (``year = '2023'`` is the integer 2023) but an aggregate has
none (``COUNT(*) > '5'`` compares a number with text, and every number sorts before any
text).  What WHERE refuses, HAVING refuses: a number or boolean against a text column,
a boolean against a number, text that is not a value of the column's type.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Union

from datafed.errors import QueryError

__all__ = ["TYPES", "Value", "coerce"]

Value = Union[bool, int, float, str, Decimal, None]  # noqa: UP007 - used at runtime
#: The column types of a dataset (``docs/stores.md``).
TYPES = ("integer", "real", "text", "boolean")

#: What stored text must look like to be read as each type: the nodes' patterns for WHERE
#: (``nodes/stores/types.py``); text SQLite's affinity would read otherwise is refused.
_TEXT_AS = {
    "integer": re.compile(r"-?[0-9]{1,18}"),
    "real": re.compile(r"-?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]{1,3})?"),
    "boolean": re.compile(r"[01]"),  # SQLite reads '1', not 'true', as a boolean column's 1
}


def coerce(ctype: str, value: Value, what: str, *, from_text: bool = True) -> Value:
    """``value`` as a literal compared with ``what``, of type ``ctype`` (module docs).

    ``from_text``: whether text is read as a number or boolean (a column's affinity); an
    aggregate has none in SQLite, so text compared with it is refused.

    Raises
    ------
    QueryError
        If SQLite would compare the value differently from WHERE, or WHERE refuses it.
    """
    if value is None or (ctype == "text" and isinstance(value, str)):
        return value
    if isinstance(value, str):
        text = value.strip()
        pattern = _TEXT_AS.get(ctype)
        if not from_text:
            raise QueryError(
                f"HAVING compares {what} with the text {value!r}: write it as a number "
                "(SQL compares an aggregate with text as text, and every number sorts "
                "before any text)"
            )
        if pattern is None or not pattern.fullmatch(text):
            kind = "TRUE, FALSE, 1 or 0" if ctype == "boolean" else f"a {ctype}"
            raise QueryError(f"HAVING compares {what} ({ctype}) with {value!r}; write {kind}")
        value = (
            text == "1" if ctype == "boolean" else int(text) if ctype == "integer" else float(text)
        )
        if isinstance(value, float) and not math.isfinite(value):
            raise QueryError(f"HAVING compares {what} with {text!r}, which is not finite")
        return value
    if ctype == "text":
        raise QueryError(f"HAVING compares {what} (text) with {value!r}; write a quoted string")
    if ctype == "boolean":
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise QueryError(f"HAVING compares {what} (boolean) with {value!r}; write TRUE or FALSE")
    if isinstance(value, bool):
        raise QueryError(f"HAVING compares {what} ({ctype}) with {value}; write a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"HAVING compares {what} with {value}, which is not finite")
    return value  # a number: SQLite and Python compare integers and reals exactly
