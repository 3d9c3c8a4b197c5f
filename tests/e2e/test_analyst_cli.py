"""The analyst's commands as a user runs them: ``datafed query`` and ``datafed nodes``.

Real processes (``tests/analyst_fed.py``): suppression flags and exact decimals in the
table and in ``--json``, SQL people write (aliases, HAVING, ORDER BY, LIMIT) and the
refusals of what the subset does not do, live progress lines and ``--quiet``, discovery
with a node down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from datafed.local.federation import PURPOSE, LocalFederation, _free_port
from tests import analyst_fed
from tests.e2e.test_cli import assert_one_line_error, run

WARDS = "SELECT zone, COUNT(*), SUM(cost) FROM wards GROUP BY zone"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    local = analyst_fed.create(tmp_path_factory.mktemp("analyst-cli"))
    local.start()
    try:
        yield local
    finally:
        codes = local.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def query(fed: LocalFederation, sql: str, *extra: str):
    return run(
        "datafed", "query", sql, "--federation", str(fed.fed_toml), "--purpose", PURPOSE, *extra
    )


def test_json_flags_suppressed_groups_and_writes_exact_decimals(fed):
    proc = query(fed, WARDS, "--protection", "paillier", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout, parse_float=Decimal)
    rows = {r[0]: (r, flag) for r, flag in zip(out["rows"], out["suppressed"], strict=True)}
    assert rows["n"] == (["n", 11, Decimal("16.5")], False)  # 9 + 2 rows over the nodes, k = 3
    assert rows["s"] == (["s", None, None], True)  # 1 + 1 rows: never shown as 0 nor dropped
    assert rows[None] == ([None, 0, None], False) and out["remainder"][-1] is True
    assert rows["e"] == (["e", 5, Decimal("11.25")], False)
    assert rows["w"] == (["w", 0, None], False)  # declared, empty: not suppressed
    assert out["columns"] == ["zone", "count(*)", "sum(cost)"] and out["error_bound"] is None
    assert proc.stderr == ""  # --quiet
    proc = query(
        fed,
        "SELECT MAX(cost), SUM(cost) FROM nulls WHERE zone = 'e'",
        "--protection",
        "plain",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert '"rows": [[30810.07, 30810.37]]' in proc.stdout  # not 30810.07000732422
    proc = query(fed, WARDS, "--protection", "ckks", "--json", "--quiet")
    assert json.loads(proc.stdout)["error_bound"] is not None
    proc = query(fed, "SELECT COUNT(*) FROM dp_visits", "--json", "--quiet")
    dp = json.loads(proc.stdout)
    assert dp["noise_stddev"]["count(*)"] > 0 and set(dp["epsilon"]) == {
        n.spec.name for n in fed.nodes
    }


def test_table_marks_suppressed_groups_and_shows_progress(fed):
    proc = query(fed, WARDS, "--protection", "paillier")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if "│" in line}
    assert "NULL" in lines["s"] and "suppressed" in lines["s"]
    assert "11.25" in lines["e"] and "suppressed" not in lines["e"]
    assert "16.5" in lines["n"] and "suppressed" not in lines["n"]
    assert "suppressed: 1 group(s) withheld" in proc.stdout
    for node in fed.nodes:  # one live line per node, with its steps
        assert f"{node.spec.name}: node info ✓ · query ✓" in proc.stderr
    assert "analyst: paillier parameters ✓ · combine ✓" in proc.stderr
    quiet = query(fed, WARDS, "--protection", "paillier", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_stepped_mode_progress_names_each_protocol_step(fed):
    proc = query(fed, "SELECT COUNT(*) FROM visits", "--protection", "secagg", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "share-keys ✓" in proc.stderr and "unmask ✓" in proc.stderr


def test_sql_people_write(fed):
    proc = query(
        fed,
        "SELECT zone AS ward, COUNT(*) AS n FROM visits GROUP BY zone "
        "HAVING COUNT(*) >= 1 ORDER BY n DESC, ward LIMIT 2",
        "--protection",
        "plain",
        "--json",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["columns"] == ["ward", "n"] and len(out["rows"]) == 2
    assert out["rows"][0][1] >= out["rows"][1][1]


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT COUNT(DISTINCT zone) FROM visits", "COUNT(DISTINCT ...)"),
        ("SELECT SUM(CASE WHEN zone = 'n' THEN 1 ELSE 0 END) FROM visits", "CASE"),
        ("SELECT SUM(cost) FROM visits v JOIN wards w ON v.zone = w.zone", "JOIN"),
    ],
)
def test_refusals_list_what_the_subset_supports(fed, sql, fragment):
    proc = query(fed, sql, "--quiet")
    assert_one_line_error(proc, 2, fragment)
    assert "datafed supports SELECT" in proc.stderr and "HAVING" in proc.stderr
    assert "JOINS" not in proc.stderr  # no parser-internal names


def test_nodes_shows_columns_access_and_a_down_node(fed, tmp_path):
    text = fed.fed_toml.read_text()
    text += f'\n[[nodes]]\nname = "water-west"\naddress = "127.0.0.1:{_free_port()}"\n'
    path = tmp_path / "fed.toml"
    path.write_text(text)
    proc = run("datafed", "nodes", "--federation", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "water-west" in proc.stdout and "DOWN" in proc.stdout
    assert "treatment cost in EUR [incl. VAT]" in proc.stdout  # printed literally
    assert "k (min group size): 3" in proc.stdout
    assert "differential privacy: epsilon 10 per query" in proc.stdout
    proc = run("datafed", "nodes", "--federation", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    nodes = {n["node"]: n for n in json.loads(proc.stdout)}
    assert nodes["water-west"]["up"] is False and nodes["water-west"]["error"]
    wards = next(d for d in nodes["water-north"]["datasets"] if d["name"] == "wards")
    assert {
        "name": "cost",
        "type": "real",
        "description": "treatment cost in EUR [incl. VAT]",
    } in wards["columns"]
    assert wards["access"]["purposes"] == [PURPOSE] and wards["access"]["min_group_size"] == 3
    dp = next(d for d in nodes["water-north"]["datasets"] if d["name"] == "dp_visits")
    assert dp["access"]["dp"]["budget_left"] <= 1000.0
    assert "rows" not in json.dumps(nodes)  # metadata only: no row counts anywhere


def test_nodes_exits_unreachable_when_no_node_answers(tmp_path, fed):
    text = fed.fed_toml.read_text().split("[[nodes]]")[0]
    text += f'[[nodes]]\nname = "water-west"\naddress = "127.0.0.1:{_free_port()}"\n'
    path = Path(tmp_path / "fed.toml")
    path.write_text(text + "\n[modes.paillier]\nbits = 2048\n")
    proc = run("datafed", "nodes", "--federation", str(path))
    assert proc.returncode == 4 and "DOWN" in proc.stdout
