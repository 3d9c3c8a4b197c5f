"""The analyst's and operator's FL commands: one-line errors, registered commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, timeout=120)


def test_train_without_a_flower_table_is_a_one_line_error(tmp_path):
    fed = tmp_path / "fed.toml"
    fed.write_text('analyst = "alice"\n')
    got = run(str(BIN / "datafed"), "train", "-f", str(fed), "--purpose", "x", "--rounds", "1")
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
