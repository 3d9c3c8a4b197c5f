"""Seeded synthetic flood-risk sensor readings, split unevenly (non-IID) across agencies.

The scenario (SCENARIOS.md, "Flood and typhoon prevention"): district flood offices
each watch their own underpasses and flood-prone roads. A reading is one site at one
hour: recent rainfall, river stage, tide, how blocked the drains are and the site's
elevation; the label says whether the site flooded. Every district follows the same
physical law (one shared logistic model with an interaction term), but districts differ
sharply in what they see -- a coastal district is low and tidal, a riverside district
sees high river stages, an upland district rarely floods -- and in how much data they
hold. That is the non-IID split federated learning has to cope with.

All data is synthetic and seeded: the same ``seed`` gives the same bytes everywhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "FLOOD_COLUMNS",
    "FLOOD_FEATURES",
    "FLOOD_LABEL",
    "FLOOD_TABLE",
    "AgencyProfile",
    "flood_holdout",
    "flood_profiles",
    "flood_readings",
    "flood_rows",
    "write_flood_sqlite",
]

FLOOD_FEATURES = (
    "rain_1h_cm",
    "rain_24h_cm",
    "river_level_m",
    "tide_m",
    "drain_blockage",
    "elevation_m",
)
FLOOD_LABEL = "flooded"
FLOOD_TABLE = "flood_readings"
#: SQL columns of a district's table: a site id, the features, the label.
FLOOD_COLUMNS = (
    ("site_id", "INTEGER"),
    *((name, "REAL") for name in (*FLOOD_FEATURES, FLOOD_LABEL)),
)

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AgencyProfile:
    """What one district flood office's sites look like (the non-IID part)."""

    name: str
    rows: int
    elevation_mean: float
    rain_scale: float
    river_mean: float
    tide_mean: float
    blockage_a: float
    blockage_b: float


#: The three district offices of the examples and the demo.
NAMED_PROFILES = (
    AgencyProfile("flood-coastal", 900, 1.5, 0.9, 0.3, 1.3, 2.0, 3.0),
    AgencyProfile("flood-riverside", 500, 4.0, 1.0, 1.6, 0.2, 2.0, 4.0),
    AgencyProfile("flood-uplands", 240, 11.0, 1.6, 0.4, 0.0, 1.5, 5.0),
)


def flood_profiles(n: int = 3, seed: int = 7) -> list[AgencyProfile]:
    """Return ``n`` agency profiles: the three named districts, then seeded variations.

    Parameters
    ----------
    n : int
        Number of agencies (at least 1).
    seed : int
        Seed for the extra districts beyond the named three.

    Returns
    -------
    list[AgencyProfile]
        Profiles named ``flood-coastal``, ``flood-riverside``, ``flood-uplands``,
        ``flood-d04``, ``flood-d05``, ...
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = list(NAMED_PROFILES[:n])
    rng = np.random.default_rng([seed, 0xF100D])
    for i in range(len(out), n):
        base = NAMED_PROFILES[i % len(NAMED_PROFILES)]
        jitter = rng.uniform(0.6, 1.4, size=5)
        out.append(
            AgencyProfile(
                name=f"flood-d{i + 1:02d}",
                rows=int(rng.integers(60, 400)),
                elevation_mean=float(base.elevation_mean * jitter[0]),
                rain_scale=float(base.rain_scale * jitter[1]),
                river_mean=float(base.river_mean * jitter[2]),
                tide_mean=float(base.tide_mean * jitter[3]),
                blockage_a=base.blockage_a,
                blockage_b=float(base.blockage_b * jitter[4]),
            )
        )
    return out


def _flood_logit(x: Floats) -> npt.NDArray[np.float64]:
    """The shared physical law every district follows (a ground truth, not a model)."""
    rain1, rain24, river, tide, block, elev = (x[:, i].astype(np.float64) for i in range(6))
    return (
        -3.2
        + 1.1 * rain1
        + 0.12 * rain24
        + 1.0 * river
        + 0.9 * tide
        + 1.8 * block
        - 0.45 * elev
        + 1.2 * rain1 * block
    )


def _features(p: AgencyProfile, rows: int, rng: np.random.Generator) -> Floats:
    rain1 = rng.gamma(1.2, p.rain_scale, rows)
    rain24 = rain1 * rng.uniform(2.0, 6.0, rows) + rng.gamma(1.0, 2.0 * p.rain_scale, rows)
    river = np.clip(rng.normal(p.river_mean, 0.6, rows), -0.5, None)
    tide = np.clip(rng.normal(p.tide_mean, 0.4, rows), 0.0, None)
    block = rng.beta(p.blockage_a, p.blockage_b, rows)
    elev = np.clip(rng.normal(p.elevation_mean, 1.5, rows), 0.0, 25.0)
    return np.stack([rain1, rain24, river, tide, block, elev], axis=1).astype(np.float32)


def flood_readings(profile: AgencyProfile, seed: int = 7, index: int = 0) -> tuple[Floats, Floats]:
    """Generate one agency's readings.

    Parameters
    ----------
    profile : AgencyProfile
        The district's profile (see :func:`flood_profiles`).
    seed : int
        Federation-wide seed.
    index : int
        The agency's position, so agencies with equal profiles still differ.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        Features ``(rows, 6)`` in :data:`FLOOD_FEATURES` order and labels ``(rows,)``
        in {0, 1}, both float32.
    """
    rng = np.random.default_rng([seed, 0xDA7A, index])
    x = _features(profile, profile.rows, rng)
    p = 1.0 / (1.0 + np.exp(-_flood_logit(x)))
    y = (rng.random(profile.rows) < p).astype(np.float32)
    return x, y


def flood_holdout(
    profiles: Sequence[AgencyProfile], rows_per_agency: int = 200, seed: int = 7
) -> tuple[Floats, Floats]:
    """Held-out readings drawn from every agency's distribution (the union), never trained on.

    Parameters
    ----------
    profiles : Sequence[AgencyProfile]
        The federation's agencies.
    rows_per_agency : int
        Rows drawn per agency.
    seed : int
        Seed; the stream is disjoint from :func:`flood_readings` for the same seed.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        Features and labels as in :func:`flood_readings`.
    """
    xs, ys = [], []
    for i, p in enumerate(profiles):
        rng = np.random.default_rng([seed, 0x401D, i])
        x = _features(p, rows_per_agency, rng)
        prob = 1.0 / (1.0 + np.exp(-_flood_logit(x)))
        xs.append(x)
        ys.append((rng.random(rows_per_agency) < prob).astype(np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def flood_rows(profile: AgencyProfile, seed: int = 7, index: int = 0) -> list[tuple[float, ...]]:
    """One agency's readings as table rows in :data:`FLOOD_COLUMNS` order."""
    x, y = flood_readings(profile, seed, index)
    return [(i, *map(float, x[i]), float(y[i])) for i in range(len(y))]


def write_flood_sqlite(path: Path, x: Floats, y: Floats, table: str = FLOOD_TABLE) -> Path:
    """Write readings to a SQLite table (one column per feature, plus the label).

    Parameters
    ----------
    path : pathlib.Path
        The database file; an existing table of the same name is replaced.
    x, y : numpy.ndarray
        Features and labels from :func:`flood_readings`.
    table : str
        Table name.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not table.isidentifier():
        raise ValueError(f"table must be an identifier, got {table!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in FLOOD_COLUMNS)})")
        rows = [(i, *map(float, x[i]), float(y[i])) for i in range(len(y))]
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(FLOOD_COLUMNS))})", rows)
    return path
