"""The analyst's and operator's FL commands: one-line errors, registered commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
COLS = ["--dataset", "flood_readings", "--features", "rain_1h_cm,tide_m", "--label", "flooded"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, timeout=120)


def test_train_without_a_flower_table_is_a_one_line_error(tmp_path):
    fed = tmp_path / "fed.toml"
    fed.write_text(
        'analyst = "alice"\n[tls]\nca = "ca.crt"\ncert = "a.crt"\nkey = "a.key"\n'
        'signing_key = "a.ed25519"\n[[nodes]]\nname = "n1"\naddress = "127.0.0.1:1"\n'
    )
    got = run(str(BIN / "datafed"), "train", "-f", str(fed), "--purpose", "x", "--rounds", "1",
              *COLS)  # fmt: skip
    assert got.returncode == 2
    assert "flower: a 'flower' table with the SuperLink address is required" in got.stderr
    assert "Traceback" not in got.stderr


def test_supernode_needs_a_valid_node_config(tmp_path):
    got = run(
        str(BIN / "datafed-node"),
        "supernode",
        "-c",
        str(tmp_path / "none.toml"),
        "--superlink",
        "127.0.0.1:1",
    )
    assert got.returncode == 2 and "file not found" in got.stderr
    assert "Traceback" not in got.stderr


def test_public_api_is_complete_sorted_and_light():
    import datafed.fl as fl

    assert fl.__all__ == sorted(fl.__all__)

    for name in fl.__all__:
        assert getattr(fl, name) is not None
    assert callable(fl.train) and callable(fl.simulate) and callable(fl.model_lineage)
    code = "import sys, datafed.fl; print('torch' in sys.modules, 'flwr' in sys.modules)"
    got = run(sys.executable, "-c", code)
    assert got.stdout.split() == ["False", "False"]


def _fed_with_flower(flood_fed, tmp_path) -> Path:
    fed = flood_fed.write_fed_toml("alice", path=tmp_path / "fed.toml")
    text = fed.read_text().replace('address = ""', 'address = "127.0.0.1:1"')  # not started
    fed.write_text(text + '\n[flower]\nsuperlink = "127.0.0.1:1"\n')
    return fed


def test_train_refuses_bad_run_config_model_and_superlink_setup_in_one_line(flood_fed, tmp_path):
    fed = str(_fed_with_flower(flood_fed, tmp_path))
    base = [str(BIN / "datafed"), "train", "-f", fed, "--purpose", "x", "--rounds", "1", *COLS]
    for extra, fragment in [
        (["--run-config", "bundle=forged"], "run config key 'bundle' cannot be set here"),
        (["--run-config", "lr=-1"], "lr must be positive"),
        (["--model", "os.system; rm"], "training spec: model must be 'mlp:16' (widths) or"),
        (["--start-superlink"], "[flower] superlink_cert and superlink_key are needed"),
    ]:
        got = run(*base, *extra)
        assert got.returncode == 2, (extra, got.stderr)
        assert got.stderr.strip().startswith("error:") and fragment in got.stderr, got.stderr
        assert "Traceback" not in got.stderr and len(got.stderr.strip().splitlines()) == 1


def test_help_and_messages_print_brackets_literally():
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps help at the terminal's width
    got = subprocess.run(
        [str(BIN / "datafed"), "train", "--help"], capture_output=True, text=True, env=env
    )
    assert (
        "[flower]" in got.stdout
        and "--run-config" in got.stdout
        and "--start-superlink" in got.stdout
    )
    got = run(str(BIN / "datafed"), "simulate", "--clientapp", "nosuch.module:app[x]")
    assert got.returncode == 2 and "cannot load ClientApp 'nosuch.module:app[x]'" in got.stderr


def test_datafed_never_imports_nodes():
    """The layering rule (issue 11): the library never imports the node package."""
    import ast

    root = Path(__file__).resolve().parents[3] / "datafed"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "nodes"]
    assert offenders == []


def test_the_cli_names_the_same_default_clientapp_as_the_library():
    from datafed.cli import train as cli_train
    from datafed.fl.settings import DEFAULT_CLIENTAPP

    assert cli_train.DEFAULT_CLIENTAPP == DEFAULT_CLIENTAPP
