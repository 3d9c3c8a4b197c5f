"""Seeded synthetic agency data for examples, demos and tests (no real records anywhere).

The tables follow ``SCENARIOS.md``: district water offices hold monthly pipe-segment
records; the tax bureau holds taxpayers; a commercial bank holds small-business loans whose
applicants partly overlap the tax bureau's IDs (for intersection-sum).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LOAN_COLUMNS",
    "PIPE_COLUMNS",
    "RESIDENT_COLUMNS",
    "TAXPAYER_COLUMNS",
    "loans",
    "person_id",
    "pipe_incidents",
    "residents",
    "taxpayers",
    "write_table",
]

PIPE_COLUMNS = (
    ("segment_id", "TEXT"),
    ("district", "TEXT"),
    ("year", "INTEGER"),
    ("month", "INTEGER"),
    ("material", "TEXT"),
    ("diameter_mm", "INTEGER"),
    ("bursts", "INTEGER"),
    ("repair_hours", "REAL"),
    ("pressure_drop_kpa", "REAL"),
)
TAXPAYER_COLUMNS = (
    ("person_id", "TEXT"),
    ("district", "TEXT"),
    ("sector", "TEXT"),
    ("compliant", "INTEGER"),
    ("declared_revenue", "REAL"),
)
LOAN_COLUMNS = (
    ("person_id", "TEXT"),
    ("sector", "TEXT"),
    ("amount", "REAL"),
    ("term_months", "INTEGER"),
)

_MATERIALS = (("cast_iron", 0.09), ("ductile_iron", 0.04), ("steel", 0.05), ("pvc", 0.03))
_SECTORS = ("retail", "logistics", "manufacturing", "catering", "services")


def pipe_incidents(
    district: str, *, seed: int, segments: int = 300, years: Sequence[int] = (2022, 2023, 2024)
) -> list[tuple[Any, ...]]:
    """Monthly records per pipe segment of one district's water supply network.

    Older cast-iron mains burst more often, and more in winter months.
    """
    rng = random.Random(f"{seed}:{district}")
    rows = []
    for s in range(segments):
        material, base_rate = rng.choice(_MATERIALS)
        diameter = rng.choice((100, 150, 200, 300, 500))
        for year in years:
            for month in range(1, 13):
                winter = 1.8 if month in (12, 1, 2) else 1.0
                rate = base_rate * winter * (1.3 if diameter <= 150 else 1.0)
                bursts = sum(1 for _ in range(3) if rng.random() < rate)
                hours = round(rng.uniform(1.5, 6.0) * bursts, 2)
                drop = round(rng.gauss(40.0, 12.0) * bursts, 2) if bursts else 0.0
                rows.append(
                    (
                        f"{district}-{s:04d}",
                        district,
                        year,
                        month,
                        material,
                        diameter,
                        bursts,
                        hours,
                        drop,
                    )
                )
    return rows


def person_id(i: int) -> str:
    """A synthetic, stable person identifier shared by agencies."""
    return "P" + hashlib.sha256(f"person:{i}".encode()).hexdigest()[:12]


def taxpayers(*, seed: int, count: int = 2000) -> list[tuple[Any, ...]]:
    """The tax bureau's taxpayers (IDs 0..count-1)."""
    rng = random.Random(f"{seed}:tax")
    rows = []
    for i in range(count):
        compliant = 1 if rng.random() < 0.85 else 0
        revenue = round(rng.lognormvariate(12.0, 0.8), 2)
        rows.append(
            (person_id(i), f"d{rng.randint(1, 6)}", rng.choice(_SECTORS), compliant, revenue)
        )
    return rows


def loans(
    *, seed: int, count: int = 800, overlap: float = 0.6, id_space: int = 2000
) -> list[tuple[Any, ...]]:
    """A bank's small-business loans; about ``overlap`` of applicants are taxpayers."""
    rng = random.Random(f"{seed}:bank")
    rows = []
    for j in range(count):
        i = rng.randrange(id_space) if rng.random() < overlap else id_space + 10_000 + j
        rows.append(
            (
                person_id(i),
                rng.choice(_SECTORS),
                round(rng.uniform(5e4, 2e6), 2),
                rng.choice((12, 24, 36, 60)),
            )
        )
    return list({r[0]: r for r in rows}.values())


#: A district's residents (person-level data: its policy must use differential privacy).
RESIDENT_COLUMNS = (
    ("resident_id", "INTEGER PRIMARY KEY"),
    ("district", "TEXT"),
    ("age", "INTEGER"),
    ("household", "INTEGER"),
    ("income", "REAL"),
)


def residents(district: str, *, seed: int, count: int = 400) -> list[tuple[Any, ...]]:
    """Residents of one district: age, household size and yearly income (seeded)."""
    rng = random.Random(f"residents/{district}/{seed}")
    out = []
    for i in range(count):
        age = rng.randint(18, 90)
        income = round(min(400_000.0, rng.lognormvariate(10.4, 0.6)), 2)
        out.append((i + 1, district, age, rng.randint(1, 6), income))
    return out


def write_table(
    path: Path, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> int:
    """Write ``rows`` to a fresh SQLite table; return the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(f'DROP TABLE IF EXISTS "{table}"')
        cols = ", ".join(f'"{n}" {t}' for n, t in columns)
        db.execute(f'CREATE TABLE "{table}" ({cols})')
        marks = ", ".join("?" for _ in columns)
        cur = db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
        count = cur.rowcount
    return count
