"""The README's commands as a user runs them: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datafed.local.federation import PURPOSE

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr
    assert proc.stderr.strip().startswith("error:")


def test_query_cli_json(local_fed):
    proc = run(
        "datafed",
        "query",
        "SELECT SUM(bursts), COUNT(*) FROM pipe_incidents WHERE year = 2023",
        "--federation",
        str(local_fed.fed_toml),
        "--purpose",
        PURPOSE,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["columns"] == ["sum(bursts)", "count(*)"] and out["protection"] == "paillier"
    assert out["rows"][0][1] == 3 * 300 * 12  # three districts, 300 segments, 12 months
    assert len(out["ledgers"]) == 3


def test_query_cli_table_and_nodes(local_fed):
    proc = run(
        "datafed",
        "query",
        "SELECT material, COUNT(*) FROM pipe_incidents GROUP BY material",
        "--federation",
        str(local_fed.fed_toml),
        "--purpose",
        PURPOSE,
        "--protection",
        "plain",
    )
    assert proc.returncode == 0, proc.stderr
    assert "cast_iron" in proc.stdout and "ledger water-north" in proc.stdout
    proc = run("datafed", "nodes", "--federation", str(local_fed.fed_toml))
    assert proc.returncode == 0 and "water-south" in proc.stdout


def test_query_cli_errors_are_one_line(local_fed, tmp_path):
    fed = str(local_fed.fed_toml)
    assert_one_line_error(
        run(
            "datafed", "query", "SELECT SUM(x) FROM t JOIN u", "--federation", fed, "--purpose", "p"
        ),
        2,
        "JOIN",
    )
    assert_one_line_error(
        run(
            "datafed",
            "query",
            "SELECT SUM(bursts) FROM pipe_incidents",
            "--federation",
            fed,
            "--purpose",
            "ads",
        ),
        3,
        "PERMISSION_DENIED",
    )
    assert_one_line_error(
        run(
            "datafed",
            "query",
            "SELECT SUM(bursts) FROM pipe_incidents",
            "--federation",
            str(tmp_path / "no.toml"),
            "--purpose",
            "p",
        ),
        2,
        "file not found",
    )
    bad = tmp_path / "fed.toml"
    bad.write_text(Path(fed).read_text().replace("timeout_s = ", "timeout_s = -"))
    assert_one_line_error(
        run(
            "datafed",
            "query",
            "SELECT COUNT(*) FROM pipe_incidents",
            "--federation",
            str(bad),
            "--purpose",
            "p",
        ),
        2,
        "timeout_s",
    )


def test_pki_cli(tmp_path):
    d = str(tmp_path / "pki")
    assert run("datafed", "pki", "init", "--dir", d).returncode == 0
    assert_one_line_error(run("datafed", "pki", "init", "--dir", d), 2, "already exists")
    proc = run("datafed", "pki", "issue", "regulator", "--role", "auditor", "--dir", d)
    assert proc.returncode == 0 and (tmp_path / "pki" / "auditor" / "regulator.crt").exists()
    assert_one_line_error(
        run("datafed", "pki", "issue", "x", "--role", "admin", "--dir", d), 2, "unknown role"
    )


def test_node_serve_with_malformed_config(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        '[node]\nname = "n1"\nlisten = "127.0.0.1:0"\n[tls]\nca="a"\ncert="b"\nkey="c"\nsigning_key="d"\n[[datasets]]\nname="t"\npath="x.sqlite"\n[datasets.policy]\nmin_group_size = "five"\n'
    )
    assert_one_line_error(
        run("datafed-node", "serve", "--config", str(cfg)), 2, "datasets.0.policy.min_group_size"
    )
    cfg.write_text(cfg.read_text().replace('"five"', "5"))
    assert_one_line_error(
        run("datafed-node", "serve", "--config", str(cfg)), 2, "tls.ca: file not found"
    )


@pytest.mark.slow
def test_make_demo_script_runs_clean():
    """`make demo`'s script end to end (set-up is what `make test` already did)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "check (cleartext" in out and "node exit codes: [0, 0, 0]" in out
    # the protected total equals the locally computed cleartext check
    check = out.split("SUM(bursts) = ")[1].split(",")[0]
    assert f"{int(check):,}" in out.split("check (cleartext")[0]
