"""The auditor's read commands on a small city: verify first, then report, jobs, reconcile."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from audit.export import ExportDir
from audit.records import decode_leaf, encode_body, encode_leaf

from .city import BRACKETS, EVIL_NAME, FORMULA, NODES, Records, build_city, statement
from .conftest import run_cli

run = run_cli


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    c = build_city(tmp_path_factory.mktemp("city"))
    yield c
    c.witness.close()


def exports(city) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(city.exports[n]) for n in NODES]


def test_report_files_from_verified_exports(city, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    html, js, cs = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.csv"
    argv = ["report", *exports(city), "-p", str(city.policy)]
    code, out, err = run([*argv, "--html", str(html), "--json", str(js), "--csv", str(cs)], capsys)
    assert code == 0, out + err
    assert f"wrote the HTML report to {html}" in out
    data = json.loads(js.read_text())
    t = data["totals"]
    assert (t["logs"], t["entries"], t["denied"]) == (3, 51, 7)
    # 6 query jobs x 3 agencies + 2 joins x 2 agencies = 22 uses
    assert t["uses"] == 22 and "epsilon" not in t  # budgets are per node: never summed
    eps = {(r["node"], r["dataset"]): (r["spent"], r["budget"], r["requesters"])
           for r in data["epsilon"]}  # fmt: skip
    assert eps == {("health-east", "clinic_visits"): (3.0, 2.0, ["alice", "bob"])}
    c = data["circulation"]
    # jobs that used data (x-1 and q-9 were refused): 6 queries and 2 joins, all cross-agency
    assert (c["jobs"], c["cross_agency_jobs"], c["cross_domain_joins"]) == (8, 8, 2)
    assert {"a": "Health Department", "b": "Water Department", "jobs": 8} in c["pairs"]
    assert c["joined_datasets"] == [
        {"a": "Health Department: clinic_visits", "b": "Water Department: pipe_incidents",
         "jobs": 2}
    ]  # fmt: skip
    assert [v["quorum_line"].endswith("cosigned by 1") for v in data["verification"]] == [True] * 3
    assert sum(v["private_parts_checked"] for v in data["verification"]) == 22
    reasons = {r["reason"]: r["count"] for r in data["denials"]["by_reason"]}
    assert reasons[BRACKETS] == 3 and reasons["PERMISSION_DENIED: requester not allowed"] == 3
    # the per-node private parts never reach the report (auditors read them in the export)
    assert "intersection_size" not in js.read_text() and "groups_suppressed" not in html.read_text()
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert len(rows) == 51 and rows[0]["node"] == "health-east"
    assert {r["purpose"] for r in rows if r["requester"] == EVIL_NAME} == {"'" + FORMULA}
    page = html.read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src &#x27;none&#x27;" in page or "default-src 'none'" in page
    for chart in ("use-requester", "use-purpose", "use-dataset", "epsilon", "denials",
                  "agency-pairs", "circulation-purpose"):  # fmt: skip
        assert f'data-chart="{chart}"' in page


def test_report_json_to_stdout_and_text_tables_render_literally(city, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(["report", *exports(city), "-p", str(city.policy), "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["totals"]["entries"] == 51
    code, out, _ = run(["report", *exports(city), "-p", str(city.policy), "--by", "reason"], capsys)
    assert code == 0 and "[a-z0-9]+" in out  # no rich markup eats the brackets
    assert "witness quorum: 1 of 1 required — met" in out


def test_jobs_lists_every_job(city, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(["jobs", *exports(city), "-p", str(city.policy), "--json"], capsys)
    assert code == 0
    jobs = {j["job_id"]: j for j in json.loads(out)}
    assert sorted(jobs) == ["psi-0", "psi-1"] + [f"q-{i}" for i in (0, 1, 2, 3, 4, 5, 9)] + ["x-1"]
    assert jobs["x-1"]["decisions"] == {"denied": 3}
    assert jobs["psi-0"]["nodes"] == ["health-east", "water-north"]
    assert jobs["q-4"]["requesters"] == ["bob"] and jobs["q-1"]["purposes"] == ["service-planning"]
    assert jobs["q-0"]["decisions"] == {"approved": 3, "released": 3}
    assert jobs["q-0"]["first_utc"] == "2026-01-01 00:00:00"
    code, out, _ = run(["jobs", *exports(city), "-p", str(city.policy)], capsys)
    assert code == 0 and "10 job(s)" in out and "psi-1" in out


def test_reconcile_checks_the_job_statement(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    def split(records: Records) -> None:  # transport was sent another statement for q-2
        entries = records["transport"]
        for k, (r, p) in enumerate(entries):
            if r.job_id == "q-2":
                d = dict(r.details, statement=statement("other"))
                entries[k] = (dataclasses.replace(r, details=d), p)

    city = build_city(tmp_path, split)
    try:
        pol = ["-p", str(city.policy)]
        code, out, _ = run(["reconcile", "q-1", *exports(city), *pol], capsys)
        assert code == 0 and "OK job q-1 reconciles across 3 node(s)" in out
        code, out, _ = run(["reconcile", "q-2", *exports(city), *pol], capsys)
        assert code == 1
        line = next(x for x in out.splitlines() if x.startswith("FAIL mismatch statement"))
        assert (
            f"health-east entries 4, 5; water-north entries 4, 5 recorded {statement('q-2')[:16]}"
            in line
        )
        assert f"transport entries 4, 5 recorded {statement('other')[:16]}" in line
    finally:
        city.witness.close()


def test_reconcile_flags_nodes_that_decided_differently(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    def deny(records: Records) -> None:  # transport refused q-3, the two others released it
        entries = records["transport"]
        for k, (r, _) in enumerate(entries):
            if r.job_id == "q-3":
                entries[k] = (dataclasses.replace(r, decision="denied", epsilon=0.0,
                                                  reason="PERMISSION_DENIED: purpose"), None)  # fmt: skip

    city = build_city(tmp_path, deny)
    try:
        pol = ["-p", str(city.policy)]
        code, out, _ = run(["reconcile", "q-3", *exports(city), *pol], capsys)
        assert code == 1 and "OK" not in out
        fails = [x for x in out.splitlines() if x.startswith("FAIL")]
        assert fails == [
            "FAIL decision-differs: job q-3 was admitted at health-east, water-north but "
            "denied at transport"
        ]
    finally:
        city.witness.close()


def test_reconcile_unknown_job_says_so_once(city, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(["reconcile", "q-typo", *exports(city), "-p", str(city.policy)], capsys)
    assert code == 1
    fails = [x for x in out.splitlines() if x.startswith("FAIL")]
    assert fails == ["FAIL no such job 'q-typo': no entry of it in the 3 export(s)"]
    assert "missing-at-node" not in out


@pytest.mark.parametrize("command", ["report", "jobs", "reconcile", "lineage"])
def test_read_commands_refuse_a_tampered_export(city, tmp_path: Path, command: str, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    bad = tmp_path / "export-water-north"
    shutil.copytree(city.exports["water-north"], bad)
    leaves = ExportDir(bad).leaves()
    index, record = decode_leaf(leaves[16])
    assert (index, record.requester, record.decision) == (16, "mallory", "denied")
    # the operator re-encodes mallory's denial as an approval, a canonical record again
    forged = dataclasses.replace(record, decision="approved", reason="policy ok")
    leaves[16] = encode_leaf(16, encode_body(forged))
    (bad / "entries.bin").write_bytes(b"".join(len(x).to_bytes(4, "big") + x for x in leaves))
    args = {"reconcile": ["x-1"], "lineage": ["ab" * 32]}.get(command, [])
    paths = [str(bad), str(city.exports["transport"])]
    code, out, err = run([command, *args, *paths, "-p", str(city.policy)], capsys)
    assert code == 1, out + err
    assert "FAIL export-water-north: entry-modified at entry 16" in out
    assert "refusing to read export-water-north" in out
    assert "mallory" not in out and "OK" not in out
