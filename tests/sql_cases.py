"""Seeded random tables and queries of the SQL subset, and SQLite's answer over their union.

The differential tests (``tests/unit/nodes/test_sql_answers.py`` in memory,
``tests/integration/test_sql_answers.py`` over real nodes) split a random table over three
nodes, run a random query of the subset through datafed, and compare with what SQLite
returns for the same SQL over all the rows.  Values are multiples of 1/4, so the
fixed-point encoding (2^-16) holds them exactly and SUMs compare exactly; the tables have
NULLs (in values and in group keys), negative values, and declared group values no row
has (empty groups).

Documented differences the comparison applies (``docs/analyst.md``): where a node reports
a domain (modes that hide groups) the answer has one row per *declared* group key -- an
empty one with COUNT 0 and NULL elsewhere -- and one *remainder* row, key all NULL, that
aggregates every row whose key is NULL or undeclared (``datafed.query.domain``).
"""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

COLUMNS = (("zone", "TEXT"), ("year", "INTEGER"), ("cost", "REAL"), ("visits", "INTEGER"))
#: Declared group values; "w" and 2024 have (almost) no rows: empty groups.
DOMAINS: dict[str, list[Any]] = {"zone": ["n", "e", "s", "w"], "year": [2022, 2023, 2024]}
NODES = ("water-north", "water-east", "water-south")
HIST = "HISTOGRAM(cost, -5, 0, 5, 20)"
HIST_SQLITE = ", ".join(
    f"COALESCE(SUM(CASE WHEN cost >= {lo} AND cost {op} {hi} THEN 1 ELSE 0 END), 0)"
    for lo, hi, op in ((-5, 0, "<"), (0, 5, "<"), (5, 20, "<="))
)
#: (datafed text, SQLite text, output columns, kind, value of an empty group); kind "int"
#: compares exactly.
AGGREGATES = [
    ("SUM(cost)", "SUM(cost)", 1, "sum", None),
    ("SUM(visits)", "SUM(visits)", 1, "int", None),
    ("COUNT(*)", "COUNT(*)", 1, "int", 0),
    ("COUNT(cost)", "COUNT(cost)", 1, "int", 0),
    ("AVG(cost)", "AVG(cost)", 1, "avg", None),
    ("AVG(visits)", "AVG(visits)", 1, "avg", None),
    ("VAR(cost)", "VAR(cost)", 1, "var", None),
    ("VAR(visits)", "VAR(visits)", 1, "var", None),
    (HIST, HIST_SQLITE, 3, "int", 0),
]
MINMAX = [
    ("MIN(cost)", "MIN(cost)", 1, "sum", None),
    ("MAX(cost)", "MAX(cost)", 1, "sum", None),
    ("MIN(visits)", "MIN(visits)", 1, "int", None),
    ("MAX(visits)", "MAX(visits)", 1, "int", None),
]
WHERE = [
    "visits > 3",
    "cost <= 7.5",
    "zone IN ('n', 's')",
    "year = 2023",
    "NOT (zone = 'e')",
    "cost BETWEEN -2 AND 10",
    "visits IS NOT NULL",  # refused by the front end: kept out below
]
WHERE = [w for w in WHERE if "IS" not in w]
#: (GROUP BY column it needs, HAVING): literals of other types than what they compare
#: with ('2023' against an integer column, 3.0 against a count), NULL, three-valued logic.
HAVING = [
    ("", "COUNT(*) > {k}"),
    ("", "COUNT(*) >= {k}.0"),
    ("", "COUNT(*) IN ({k}, NULL) OR COUNT(*) > {k2}"),
    ("", "NOT COUNT(*) <= {k} AND SUM(visits) IS NOT NULL"),
    ("", "COUNT(cost) BETWEEN {k} AND {k2}.5"),
    ("year", "year IN ('2023', {year})"),
    ("year", "year > 2022.5 OR COUNT(*) > {k}"),
    ("year", "year != ' 2023 ' AND COUNT(*) >= {k}"),
    ("zone", "zone != 'e' AND COUNT(*) >= {k}"),
    ("zone", "zone IS NULL OR zone BETWEEN 'a' AND 'o'"),
]


def table(rng: random.Random, rows: int, *, null_keys: bool = True) -> list[tuple[Any, ...]]:
    """Random rows of :data:`COLUMNS`: NULLs, negatives, ward ``w`` with only NULL costs,
    ward ``e`` with only positive ones, rarely a 2024 row."""
    out = []
    for _ in range(rows):
        zone = None if null_keys and rng.random() < 0.05 else rng.choice(["n", "e", "s"])
        if rng.random() < 0.03:
            zone = "w"  # a ward whose costs are all NULL
        year = 2024 if rng.random() < 0.02 else rng.choice([2022, 2023])
        low = 1 if zone == "e" else -40  # ward e: costs > 0, so a phantom 0 would be its MIN
        cost = None if zone == "w" or rng.random() < 0.25 else rng.randint(low, 80) / 4
        visits = None if rng.random() < 0.2 else rng.randint(-5, 20)
        out.append((zone, year, cost, visits))
    return out


def split(rng: random.Random, rows: Sequence[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows dealt to the nodes; the first node's ``e`` rows lose their cost (all NULL)."""
    parts: dict[str, list[tuple[Any, ...]]] = {n: [] for n in NODES}
    for r in rows:
        parts[rng.choice(NODES)].append(r)
    parts[NODES[0]] = [(z, y, None if z == "e" else c, v) for z, y, c, v in parts[NODES[0]]]
    return parts


@dataclass(frozen=True)
class Case:
    """One random query: datafed's SQL, SQLite's, and how to compare the answers."""

    sql: str
    sqlite: str
    group_by: tuple[str, ...]
    kinds: tuple[str, ...]  # per output column after the group columns
    empty: tuple[Any, ...]  # per output column: its value in an empty group
    ordered: bool
    #: SQLite's text of the aggregates and of the WHERE clause (" WHERE ..." or "").
    aggregates_sqlite: str = ""
    where: str = ""


def query(rng: random.Random, *, minmax: bool, post: bool, grouped: bool | None = None) -> Case:
    """A random query of the subset (``post``: HAVING, ORDER BY and LIMIT too)."""
    pool = AGGREGATES + (MINMAX if minmax else [])
    aggs = rng.sample(pool, rng.randint(1, 4))
    choices = [(), ("zone",), ("year",), ("zone", "year")]
    group = rng.choice(choices[1:] if grouped else choices[:1] if grouped is False else choices)
    where = ""
    if rng.random() < 0.7:
        terms = rng.sample(WHERE, rng.randint(1, 2))
        where = " WHERE " + (" AND " if rng.random() < 0.6 else " OR ").join(
            f"({t})" for t in terms
        )
    cols = ", ".join(group)
    select = [*group, *(a[0] for a in aggs)]
    select_sqlite = [*group, *(a[1] for a in aggs)]
    tail = f" GROUP BY {cols}" if group else ""
    tail_sqlite = tail
    ordered = False
    if post:
        if rng.random() < 0.5:
            k = rng.randint(1, 12)
            forms = [h for g, h in HAVING if g in ("", *group)]
            having = rng.choice(forms).format(k=k, k2=2 * k, year=rng.choice([2022, 2024]))
            tail += f" HAVING {having}"
            tail_sqlite += f" HAVING {having}"
        if group and rng.random() < 0.7:
            first = rng.choice(
                [f"{i + 1}" for i, a in enumerate(select) if "VAR" not in a and "HIST" not in a]
            )
            desc = rng.choice(["", " DESC"])
            order = ", ".join([f"{first}{desc}", *group])
            tail += f" ORDER BY {order}"
            tail_sqlite += f" ORDER BY {order}"
            ordered = True
            if rng.random() < 0.5:
                n = rng.randint(0, 4)
                tail += f" LIMIT {n}"
                tail_sqlite += f" LIMIT {n}"
    return Case(
        f"SELECT {', '.join(select)} FROM visits{where}{tail}",
        f"SELECT {', '.join(select_sqlite)} FROM visits{where}{tail_sqlite}",
        tuple(group),
        tuple(k for a in aggs for k in [a[3]] * a[2]),
        tuple(e for a in aggs for e in [a[4]] * a[2]),
        ordered,
        ", ".join(a[1] for a in aggs),
        where,
    )


class _Var:
    """VAR: the sample variance, NULL under two values (as PostgreSQL's VAR_SAMP)."""

    def __init__(self) -> None:
        self.xs: list[float] = []

    def step(self, x: float | None) -> None:
        if x is not None:
            self.xs.append(float(x))

    def finalize(self) -> float | None:
        n = len(self.xs)
        if n < 2:
            return None
        mean = math.fsum(self.xs) / n
        return math.fsum((x - mean) ** 2 for x in self.xs) / (n - 1)


def sqlite_answer(
    parts: dict[str, list[tuple[Any, ...]]], sql: str, *, drop_null_keys: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """SQLite's answer to ``sql`` over the union of every node's rows."""
    db = sqlite3.connect(":memory:")
    db.create_aggregate("VAR", 1, _Var)  # type: ignore[arg-type]
    db.execute("CREATE TABLE visits (" + ", ".join(f"{n} {t}" for n, t in COLUMNS) + ")")
    for rows in parts.values():
        db.executemany("INSERT INTO visits VALUES (?, ?, ?, ?)", rows)
    for col in drop_null_keys:
        db.execute(f"DELETE FROM visits WHERE {col} IS NULL")
    return [tuple(r) for r in db.execute(sql)]


def expected(
    case: Case, parts: dict[str, list[tuple[Any, ...]]], hides_groups: bool
) -> list[tuple[Any, ...]]:
    """SQLite's rows, with the documented difference of modes that hide groups applied."""
    if not (hides_groups and case.group_by):
        return sqlite_answer(parts, case.sqlite)
    got = {r[: len(case.group_by)]: r for r in sqlite_answer(parts, case.sqlite)}
    keys = itertools.product(*(DOMAINS[g] for g in case.group_by))
    return [*(got.get(key, (*key, *case.empty)) for key in keys), remainder(case, parts)]


def remainder(case: Case, parts: dict[str, list[tuple[Any, ...]]]) -> tuple[Any, ...]:
    """SQLite's aggregates over the rows whose GROUP BY key is NULL or undeclared."""
    declared = " AND ".join(
        f"{g} IN ({', '.join(repr(v) for v in DOMAINS[g])})" for g in case.group_by
    )
    rest = f"NOT COALESCE({declared}, 0)"
    where = (
        f" WHERE ({case.where.removeprefix(' WHERE ')}) AND {rest}"
        if case.where
        else f" WHERE {rest}"
    )
    (row,) = sqlite_answer(parts, f"SELECT {case.aggregates_sqlite} FROM visits{where}")
    return ((None,) * len(case.group_by)) + tuple(row)


def same(got: Any, want: Any, kind: str, *, tolerance: float = 0.0) -> bool:
    """Whether datafed's value equals SQLite's (exact, or within ``tolerance`` for CKKS)."""
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, Decimal):
        got = float(got)
    if kind == "int" and not tolerance:
        return bool(got == want and float(got).is_integer())
    rel = 1e-6 if kind == "var" else 1e-9
    return math.isclose(float(got), float(want), rel_tol=rel, abs_tol=max(tolerance, 1e-9))
