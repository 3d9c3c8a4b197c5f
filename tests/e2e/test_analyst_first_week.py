"""What an analyst's first week meets, against real node processes (``tests/analyst_fed.py``,
each node allowing one open job per requester): ``datafed init`` naming the nodes from
their certificates, a node-name typo that says so, tables never cut and in one number
format, and a cancelled query (Ctrl-C) that closes its job at the nodes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.export import ExportDir, export_store
from audit.records import decode_leaf
from datafed.client import Federation
from datafed.client.progress import Step
from datafed.local.federation import PURPOSE, LocalFederation
from tests import analyst_fed
from tests.e2e.test_cli import assert_one_line_error, run


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    local = analyst_fed.create(tmp_path_factory.mktemp("first-week"))
    for node in local.nodes:  # one open job per requester: a job left open blocks the next
        node.config.write_text(
            node.config.read_text() + "\n[limits]\nmax_open_jobs_per_requester = 1\n"
        )
    local.start()
    try:
        yield local
    finally:
        codes = local.stop()
        assert all(c == 0 for c in codes), f"nodes exited with {codes}"


def test_init_names_the_nodes_from_their_certificates(fed: LocalFederation, tmp_path: Path):
    out = tmp_path / "fed.toml"
    addresses = [n.address for n in fed.nodes]
    proc = run("datafed", "init", *addresses, "--analyst", "alice", "--pki", str(fed.pki_dir),
               "-o", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ", ".join(n.spec.name for n in fed.nodes)
    assert f"wrote {out}: 3 node(s): {names}" in proc.stdout
    text = out.read_text()
    for node in fed.nodes:
        assert f'name = "{node.spec.name}"\naddress = "{node.address}"' in text
    assert 'analyst = "alice"' in text
    nodes = run("datafed", "nodes", "-f", str(out), "--json")
    assert nodes.returncode == 0, nodes.stderr
    assert [n["up"] for n in json.loads(nodes.stdout)] == [True] * 3
    again = run("datafed", "init", *addresses, "--analyst", "alice", "--pki", str(fed.pki_dir),
                "-o", str(out))  # fmt: skip
    assert_one_line_error(again, 2, "exists: pass --force to replace it")
    bad = run("datafed", "init", "127.0.0.1:1", "--analyst", "alice", "--pki", str(fed.pki_dir),
              "-o", str(tmp_path / "other.toml"))  # fmt: skip
    assert_one_line_error(bad, 4, "cannot reach 127.0.0.1:1")
    assert not (tmp_path / "other.toml").exists()


def test_a_node_name_typo_says_so_not_cannot_reach(fed: LocalFederation, tmp_path: Path):
    first = fed.nodes[0].spec.name
    typo = tmp_path / "typo.toml"
    typo.write_text(fed.fed_toml.read_text().replace(f'"{first}"', '"water-nrth"', 1))
    proc = run("datafed", "query", "SELECT COUNT(*) FROM visits", "-f", str(typo),
               "--purpose", PURPOSE, "--protection", "plain", "--quiet")  # fmt: skip
    assert_one_line_error(proc, 2, f"is {first!r}, not 'water-nrth'")
    assert "cannot reach" not in proc.stderr
    nodes = run("datafed", "nodes", "-f", str(typo))
    assert f"is {first!r}, not 'water-nrth'" in nodes.stdout


def test_tables_are_never_cut_and_numbers_have_one_format(fed: LocalFederation):
    key = "ward_code_as_the_city_registry_spells_it_in_every_report"
    value = "visits_counted_over_all_three_district_health_offices"
    sql = f"SELECT zone AS {key}, COUNT(*) AS {value}, SUM(cost) FROM dp_visits GROUP BY zone"
    proc = run("datafed", "query", sql, "-f", str(fed.fed_toml), "--purpose", PURPOSE,
               "--protection", "shares", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert key in proc.stdout and value in proc.stdout  # not cut at 80 columns
    row = next(ln for ln in proc.stdout.splitlines() if re.search(r"│\s+n\s+│", ln))
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    # the DP sum (1-sigma ~15) is rounded to tens and written with a separator
    assert re.fullmatch(r"1,[0-9]{2}0", cells[2]), row
    noise = next(ln for ln in proc.stdout.splitlines() if "differential privacy" in ln)
    assert "sum(cost) ±" in noise
    js = run("datafed", "query", sql, "-f", str(fed.fed_toml), "--purpose", PURPOSE,
             "--protection", "shares", "--json", "--quiet")  # fmt: skip
    raw = {r[0]: r for r in json.loads(js.stdout)["rows"]}["n"]
    assert raw[2] is not None  # --json keeps the released value as it is


def _ledger_reasons(fed: LocalFederation, tmp_path: Path, job: str) -> dict[str, list[str]]:
    out = {}
    for node in fed.nodes:
        db = node.config.parent / "state" / "ledger.sqlite"
        exp = ExportDir(export_store(db, tmp_path / node.spec.name))
        recs = [decode_leaf(leaf)[1] for leaf in exp.leaves()]
        out[node.spec.name] = [f"{r.decision}: {r.reason}" for r in recs if r.job_id == job]
    return out


def test_a_cancelled_query_closes_its_job_at_the_nodes(fed: LocalFederation, tmp_path: Path):
    """Ctrl-C is a cancellation of ``asyncio.run``'s task: here, once every node answered."""
    client = Federation.from_file(fed.fed_toml)
    sql = "SELECT zone, COUNT(*) FROM visits GROUP BY zone"
    answered: list[str] = []

    async def interrupted() -> None:
        task = asyncio.current_task()
        assert task is not None

        def progress(step: Step) -> None:
            if step.step == "query" and step.state == "done":
                answered.append(step.node)
                if len(answered) == len(fed.nodes):
                    task.cancel()  # what asyncio.run does at a Ctrl-C

        await client.aquery(sql, purpose=PURPOSE, protection="shares", progress=progress)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())
    # the job is closed at the nodes: the next one is admitted at once (one open job each)
    result = client.query(sql, purpose=PURPOSE, protection="shares")
    assert result.rows
    reasons = _ledger_reasons(fed, tmp_path, _first_job(fed, tmp_path, result.job_id))
    cancelled = [n for n, rs in reasons.items()
                 if "denied: cancelled by the requester: the job is closed here" in rs]  # fmt: skip
    assert cancelled, reasons


def _first_job(fed: LocalFederation, tmp_path: Path, later: str) -> str:
    """The job before ``later`` in the first node's ledger (the cancelled one)."""
    db = fed.nodes[0].config.parent / "state" / "ledger.sqlite"
    exp = ExportDir(export_store(db, tmp_path / "first"))
    jobs = [decode_leaf(leaf)[1].job_id for leaf in exp.leaves()]
    order = list(dict.fromkeys(j for j in jobs if j))
    return order[order.index(later) - 1]
