"""Five real nodes, five storage engines, every protection mode: SQL's answer over the union.

The nodes (real ``datafed-node serve`` processes, mTLS on loopback) hold different
districts of the same logical table, each in another store: typed SQLite, SQLite with
every column TEXT (a CSV imported the ordinary way, types declared in node.toml), DuckDB,
PostgreSQL (the session's server) and Spark over Parquet.  Every mode must give what
SQLite answers over the union of all rows -- which also reproduces the type bugs of
issue 10 over the wire (TEXT years dropped from a Paillier domain, listed twice in plain,
TEXT clamped as text under DP).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from datafed import pki
from datafed.client import Federation
from datafed.local import synth
from datafed.local.federation import LocalFederation, NodeSpec, with_consortium
from tests.engines.data import ENGINES, pipe_rows, write

PURPOSE = "service-planning"
MODES = ("plain", "paillier", "shares", "secagg", "ckks")
VISIT_COLUMNS = (("ward", "TEXT"), ("year", "INTEGER"), ("cost", "REAL"))
GROUPED = (
    "SELECT year, SUM(bursts), COUNT(*), AVG(repair_hours), COUNT(repair_hours) FROM pipe_incidents "
    "WHERE month <= 6 AND material IN ('steel', 'pvc', 'cast_iron') GROUP BY year"
)


def _visits(i: int) -> list[tuple[Any, ...]]:
    return [(f"w{j % 3}", 2023 + j % 2, (5.0, 50.0, 1000.0)[(i + j) % 3]) for j in range(30)]


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _dataset(name: str, keys: dict[str, Any], policy: str) -> list[str]:
    lines = ["", "[[datasets]]", f'name = "{name}"']
    spark = keys.pop("spark", None)
    lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    if spark:
        lines += ["[datasets.spark]", *(f"{k} = {_toml_value(v)}" for k, v in spark.items())]
    return [*lines, "[datasets.policy]", policy]


POLICY = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_aggregates = ["sum", "count", "avg"]\n'
    f"allowed_protections = {list(MODES)!r}\n".replace("'", '"')
    + "min_group_size = 1\n"
    "person_level = false  # exact answers, compared with SQLite over the union\n"
    "[datasets.policy.group_domains]\n"
    "year = [2023, 2024]\n"
)
DP_POLICY = (
    'allowed_requesters = ["alice"]\n'
    f'allowed_purposes = ["{PURPOSE}"]\n'
    'allowed_protections = ["plain"]\n'
    "min_group_size = 1\n"
    "[datasets.policy.dp]\n"
    "epsilon_per_query = 10.0\n"
    "budget_epsilon = 100.0\n"
    "bounds = { cost = [0.0, 100.0] }\n"
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory, pg, spark) -> Iterator[tuple[LocalFederation, list]]:
    root = tmp_path_factory.mktemp("fed-engines")
    names = [f"node-{e}" for e in ENGINES]
    specs = [
        NodeSpec(name=n, agency=n, datasets=[("unused", synth.PIPE_COLUMNS, [])]) for n in names
    ]
    local = LocalFederation.create(root, specs)
    union = []
    for i, (engine, node) in enumerate(zip(ENGINES, local.nodes, strict=True)):
        rows = pipe_rows(f"d{i}", seed=i)
        union += rows
        data = node.config.parent / "data"
        files = pki.party_paths(local.pki_dir, "node", node.spec.name)
        lines = [
            "[node]",
            f'name = "{node.spec.name}"',
            'listen = "127.0.0.1:0"',
            'state_dir = "state"',
            "",
            "[tls]",
            f'ca = "{local.pki_dir / "ca.crt"}"',
            f'cert = "{files.cert}"',
            f'key = "{files.key}"',
            f'signing_key = "{files.signing_key}"',
        ]
        keys = write(engine, data, "pipe_incidents", synth.PIPE_COLUMNS, rows, pg=pg, tag=f"-{i}")
        lines += _dataset("pipe_incidents", keys, with_consortium(POLICY, names))
        vkeys = write(engine, data, "visits", VISIT_COLUMNS, _visits(i), pg=pg, tag=f"-{i}")
        lines += _dataset("visits", vkeys, DP_POLICY)
        node.config.write_text("\n".join(lines) + "\n")
    local.start(ready_timeout_s=120)
    try:
        yield local, union
    finally:
        codes = local.stop()
        assert all(c == 0 for c in codes), codes


def _truth(union: list, sql: str) -> list[tuple]:
    db = sqlite3.connect(":memory:")
    db.execute(
        f"CREATE TABLE pipe_incidents ({', '.join(f'{n} {t}' for n, t in synth.PIPE_COLUMNS)})"
    )
    db.executemany(
        f"INSERT INTO pipe_incidents VALUES ({', '.join('?' * len(synth.PIPE_COLUMNS))})", union
    )
    return sorted(db.execute(sql).fetchall())


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_sqls_answer_over_the_union(fed, mode):
    local, union = fed
    client = Federation.from_file(local.fed_toml)
    r = client.query(GROUPED, purpose=PURPOSE, protection=mode)
    assert set(r.nodes) == {n.spec.name for n in local.nodes}
    want = _truth(union, GROUPED)
    _, remainder = r.flags()
    rows = [row for row, rest in zip(r.rows, remainder, strict=True) if not rest]
    # the modes that hide groups add the remainder (a NULL or undeclared year: none here)
    assert [row[2] for row, rest in zip(r.rows, remainder, strict=True) if rest] == (
        [] if mode == "plain" else [0]
    )
    assert [row[0] for row in rows] == [w[0] for w in want] == [2023, 2024]  # once each
    tol = (r.error_bound or 0.0) + 1e-3
    for got, exp in zip(rows, want, strict=True):
        assert got[2] == exp[2] and abs(got[4] - exp[4]) <= (r.error_bound or 0)  # counts
        assert abs(got[1] - exp[1]) <= tol
        assert math.isclose(got[3], exp[3], abs_tol=tol)


def test_dp_clamps_text_imported_costs_as_numbers(fed):
    """Issue 10: SUM(cost) under DP clamped TEXT as text ('1000.0' < '100')."""
    local, _ = fed
    r = Federation.from_file(local.fed_toml).query(
        "SELECT SUM(cost) FROM visits", purpose=PURPOSE, protection="plain"
    )
    clamped = sum(min(c, 100.0) for i in range(len(ENGINES)) for *_, c in _visits(i))
    unclamped = sum(c for i in range(len(ENGINES)) for *_, c in _visits(i))
    sigma = r.noise_stddev["sum(cost)"]
    assert 0 < sigma < 100
    assert abs(r.rows[0][0] - clamped) <= 8 * sigma
    assert unclamped - clamped > 100 * sigma
