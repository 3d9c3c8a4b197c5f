"""``datafed-node import``: CSV/Parquet into DuckDB or SQLite, typed, all or nothing, in the ledger."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit import Ledger
from datafed import pki
from datafed.errors import ConfigError
from datafed.pki.ca import load_signing_key
from datafed.query.components import components
from datafed.query.sql import parse_sql
from nodes.config import load_node_config
from nodes.importer.load import ImportRefused, import_files
from nodes.stores import DataStore

BIN = Path(sys.executable).parent
CSV = "ward,year,cost,visits,opened\na,2023,10.5,3,2023-01-02\nb,2024,12,4,2023-02-03\nc,2023,,5,2023-03-04\n"


def node_dir(
    root: Path, path: str = "data/visits.duckdb", types: str = '{ year = "integer" }'
) -> Path:
    if not (root / "pki" / "ca.crt").exists():
        pki.init_ca(root / "pki")
        pki.issue(root / "pki", "node", "water-north")
    (root / "node.toml").write_text(
        f"""
[node]
name = "water-north"
state_dir = "state"
[tls]
ca = "pki/ca.crt"
cert = "pki/node/water-north.crt"
key = "pki/node/water-north.key"
signing_key = "pki/node/water-north.ed25519"
[[datasets]]
name = "visits"
path = "{path}"
types = {types}
[datasets.policy]
allowed_requesters = ["alice"]
person_level = false
consortium = ["water-north", "water-east", "water-south"]
allowed_purposes = ["care"]
"""
    )
    return root / "node.toml"


def records(root: Path) -> list:
    key = load_signing_key(root / "pki/node/water-north.ed25519")
    with Ledger.open(root / "state/ledger.sqlite", "datafed/ledger/water-north", key) as led:
        return [led.get_record(i) for i in range(led.head().size)]


def private_parts(root: Path) -> list:
    key = load_signing_key(root / "pki/node/water-north.ed25519")
    with Ledger.open(root / "state/ledger.sqlite", "datafed/ledger/water-north", key) as led:
        return [led.get_private(i) for i in range(led.head().size)]


@pytest.mark.parametrize("target", ["data/visits.duckdb", "data/visits.sqlite"])
def test_csv_to_served_typed_dataset_with_ledger_entry(tmp_path, target):
    toml = node_dir(tmp_path, target)
    (tmp_path / "visits.csv").write_text(CSV)
    seen = []
    result = import_files(
        load_node_config(toml),
        "visits",
        [tmp_path / "visits.csv"],
        progress=lambda s, f: seen.append((s, f)),
    )
    assert result.rows == 3 and result.engine == target.rsplit(".", 1)[1]
    assert result.types == {
        "ward": "text",
        "year": "integer",
        "cost": "real",
        "visits": "integer",
        "opened": "text",
    }
    assert any(s.startswith("hashing") for s, _ in seen) and any(
        s.startswith("reading") for s, _ in seen
    )
    store = DataStore(load_node_config(toml).datasets)  # serve's checks pass
    spec = parse_sql("SELECT year, SUM(cost), COUNT(cost) FROM visits GROUP BY year")
    groups = store.aggregate(spec, components(spec), 16)
    assert [(g.key, g.values[0] / 2**16, g.values[1]) for g in groups] == [
        ((2023,), 10.5, 1),
        ((2024,), 12.0, 1),
    ]
    store.close()
    (rec,) = records(tmp_path)
    assert (rec.operation, rec.decision, rec.requester_role) == ("import", "approved", "operator")
    assert rec.request_digest == hashlib.sha256(CSV.encode()).hexdigest()
    assert rec.details["file"] == "visits.csv" and "rows" not in rec.details
    assert private_parts(tmp_path) == [{"rows": "3"}]  # counts for auditors only
    assert "year=integer" in rec.details["types"]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("d,2023.5,1,1,2023-01-01", "line 3: column 'year': '2023.5' is not integer"),
        ("d,2023,1,1", "line 3"),  # a missing column: DuckDB's reader names the line
        ("d,twenty,1,1,2023-01-01", "line 3: column 'year': 'twenty' is not integer"),
    ],
)
def test_a_bad_row_refuses_the_whole_import_and_changes_nothing(tmp_path, bad_line, fragment):
    toml = node_dir(tmp_path)
    (tmp_path / "ok.csv").write_text(CSV)
    import_files(load_node_config(toml), "visits", [tmp_path / "ok.csv"])
    db = tmp_path / "data/visits.duckdb"
    before = db.read_bytes()
    lines = CSV.splitlines()
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1], bad_line, *lines[2:]]) + "\n")
    with pytest.raises(ImportRefused) as info:
        import_files(load_node_config(toml), "visits", [tmp_path / "bad.csv"], mode="replace")
    assert fragment in str(info.value) and "bad.csv" in str(info.value)
    assert db.read_bytes() == before
    store = DataStore(load_node_config(toml).datasets)
    assert store.aggregate(parse_sql("SELECT COUNT(*) FROM visits"), (), 16)[0].rows == 3
    store.close()
    recs = records(tmp_path)
    assert [r.decision for r in recs] == ["approved", "denied"]
    assert recs[1].request_digest == hashlib.sha256((tmp_path / "bad.csv").read_bytes()).hexdigest()


def test_refused_first_import_leaves_no_file(tmp_path):
    toml = node_dir(tmp_path, types='{ year = "integer", cost = "real" }')
    (tmp_path / "bad.csv").write_text("ward,year,cost\na,2023,1.5\nb,2024,n/a\n")
    with pytest.raises(ImportRefused, match="line 3: column 'cost': 'n/a' is not real"):
        import_files(load_node_config(toml), "visits", [tmp_path / "bad.csv"])
    assert not (tmp_path / "data/visits.duckdb").exists()


def test_parquet_append_replace_and_mismatch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    toml = node_dir(tmp_path, types="{}")
    for i in range(2):
        pq.write_table(
            pa.table({"ward": ["a", "b"], "year": [2023 + i, 2024], "cost": [1.5, 2.5]}),
            tmp_path / f"p{i}.parquet",
        )
    cfg = load_node_config(toml)
    r = import_files(cfg, "visits", [tmp_path / "p0.parquet", tmp_path / "p1.parquet"])
    assert r.rows == 4 and [f[2] for f in r.files] == [2, 2]
    import_files(cfg, "visits", [tmp_path / "p0.parquet"], mode="append")
    with pytest.raises(ImportRefused, match="already exists"):
        import_files(cfg, "visits", [tmp_path / "p0.parquet"])
    pq.write_table(pa.table({"ward": ["a"], "year": ["2023"]}), tmp_path / "other.parquet")
    with pytest.raises(ImportRefused, match="differ from table"):
        import_files(cfg, "visits", [tmp_path / "other.parquet"], mode="append")
    r = import_files(cfg, "visits", [tmp_path / "other.parquet"], mode="replace")
    assert r.types == {"ward": "text", "year": "text"} and r.rows == 1
    assert [x.decision for x in records(tmp_path)] == [
        "approved",
        "approved",
        "approved",
        "denied",
        "denied",
        "approved",
    ]


def test_import_refuses_while_the_node_holds_its_ledger(tmp_path):
    toml = node_dir(tmp_path)
    (tmp_path / "visits.csv").write_text(CSV)
    key = load_signing_key(tmp_path / "pki/node/water-north.ed25519")
    (tmp_path / "state").mkdir()
    with Ledger.open(tmp_path / "state/ledger.sqlite", "datafed/ledger/water-north", key):
        with pytest.raises(ConfigError, match=r"open by another writer.*stop the node"):
            import_files(load_node_config(toml), "visits", [tmp_path / "visits.csv"])
    assert not (tmp_path / "data/visits.duckdb").exists()


def test_cli_one_line_errors_and_literal_brackets(tmp_path):
    toml = node_dir(tmp_path)
    (tmp_path / "visits.csv").write_text(CSV)

    def run(*args):
        return subprocess.run(
            [str(BIN / "datafed-node"), *args], capture_output=True, text=True, timeout=120
        )

    ok = run("import", "--config", str(toml), "--dataset", "visits", str(tmp_path / "visits.csv"))
    assert ok.returncode == 0, ok.stderr
    assert "imported 3 row(s) into dataset 'visits'" in ok.stdout and "ledger #0" in ok.stdout
    for args, fragment in [
        (
            ["--dataset", "nope", str(tmp_path / "visits.csv")],
            "no dataset 'nope' in node.toml (add a [[datasets]] entry first)",
        ),
        (["--dataset", "visits", str(tmp_path / "missing.csv")], "missing.csv: file not found"),
        (
            ["--dataset", "visits", str(tmp_path / "visits.csv")],
            "already exists: give --replace or --append",
        ),
        (["--dataset", "visits", str(toml)], "unknown format"),
    ]:
        r = run("import", "--config", str(toml), *args)
        assert r.returncode == 2, r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert fragment in r.stderr, r.stderr


@pytest.mark.parametrize(
    "header", ['ward,"year"" INTEGER); DROP TABLE x; --",cost', "ward,1year,cost", "ward,a b,cost"]
)
def test_hostile_column_names_are_refused(tmp_path, header):
    toml = node_dir(tmp_path, types="{}")
    (tmp_path / "h.csv").write_text(header + "\na,2023,1.5\n")
    with pytest.raises(ImportRefused, match="is not an identifier"):
        import_files(load_node_config(toml), "visits", [tmp_path / "h.csv"])
    assert not (tmp_path / "data/visits.duckdb").exists()


MESSY = (
    "district,year,visits,cost,zip,flag\n"
    "north,2023,4,10.5,01234,true\n"
    "north,2024,n/a,12,02345,false\n"
    "district,year,visits,cost,zip,flag\n"  # a concatenated export repeats its header
    "south,NA,7,,03456,true\n"
    "south,2024,5,unknown,04567,false\n"
)


def node_import(toml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "datafed-node"), "import", "--config", str(toml), "-d", "visits", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_real_files_na_tokens_repeated_headers_and_the_typing_decision(tmp_path):
    toml = node_dir(tmp_path, types="{}")
    messy = tmp_path / "messy.csv"
    messy.write_text(MESSY)
    # Without NA tokens 'n/a' is a value: the column is text, and the output says why.
    r = node_import(toml, str(messy))
    assert r.returncode == 0, r.stderr
    assert "'n/a' on messy.csv line 3 is not a number" in r.stdout
    assert "add it to import_na" in r.stdout and "(or --na)" in r.stdout
    assert "skipped 1 line(s) repeating the header" in r.stdout
    # With them, the columns get their types; the decision is shown per column.
    r = node_import(toml, "--replace", "--na", "n/a", "--na", "NA", str(messy))
    assert r.returncode == 0, r.stderr
    assert "imported 4 row(s)" in r.stdout
    want = {
        "year": ("integer", "1", "every value is a whole number"),
        "visits": ("integer", "1", "every value is a whole number"),
        "cost": ("text", "1", "'unknown' on messy.csv line 6 is not a number"),
        "zip": ("text", "0", "'01234' on messy.csv line 2 has leading zeros"),
        "flag": ("boolean", "0", "every value is true or false"),
    }
    for col, (ctype, missing, why) in want.items():
        (row,) = [x for x in r.stdout.splitlines() if x.strip("│ ").startswith(col + " ")]
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        assert cells[:3] == [col, ctype, missing] and why in cells[3], (col, row)
    store = DataStore(load_node_config(toml).datasets)
    spec = parse_sql("SELECT SUM(visits), COUNT(visits), COUNT(*) FROM visits")
    (group,) = store.aggregate(spec, components(spec), 0)
    assert tuple(group.values[:2]) == (16, 3) and group.rows == 4
    store.close()
    rec = records(tmp_path)[-1]
    assert rec.decision == "approved" and rec.details["skipped_header_lines"] == "1"
    assert "visits=integer" in rec.details["types"]
    # --keep-headers keeps the repeated line: 'year' is then text, and says so.
    r = node_import(toml, "--replace", "--na", "n/a", "--na", "NA", "--keep-headers", str(messy))
    assert r.returncode == 0 and "'year' on messy.csv line 4 is not a number" in r.stdout


def test_declared_types_and_configured_na_tokens_override_detection(tmp_path):
    toml = node_dir(tmp_path, types='{ zip = "integer", visits = "real" }')
    toml.write_text(toml.read_text().replace("types =", 'import_na = ["", "n/a", "NA"]\ntypes ='))
    messy = tmp_path / "messy.csv"
    messy.write_text(MESSY.replace("unknown", "3.5"))
    r = node_import(toml, str(messy))
    assert r.returncode == 0, r.stderr
    result = load_node_config(toml)
    assert result.datasets[0].import_na == ["", "n/a", "NA"]
    store = DataStore(result.datasets)
    assert store.column_types("visits") == {
        "district": "text",
        "year": "integer",
        "visits": "real",
        "cost": "real",
        "zip": "integer",
        "flag": "boolean",
    }
    store.close()
    assert r.stdout.count("declared in node.toml (types)") == 2
    # A declared type still refuses what does not fit it, naming the line.
    bad = tmp_path / "bad.csv"
    bad.write_text(MESSY.replace("04567", "45x67"))
    r = node_import(toml, "--replace", str(bad))
    assert r.returncode == 2 and "bad.csv line 6: column 'zip': '45x67' is not integer" in r.stderr
