"""The operators' commands as they run them: ``datafed pki``, ``datafed-node init``,
``--version``, the configuration reference, and messages that print as written."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from pydantic import BaseModel

from datafed.config.doc import MissingDescription, sections
from nodes.config import NodeConfig, load_node_config

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def one_line_error(got: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert got.returncode == 2, got.stdout + got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], got.stderr


def test_agency_requests_operator_signs_and_a_held_name_needs_force(tmp_path):
    ops, agency = str(tmp_path / "ops"), str(tmp_path / "agency")
    assert run("datafed", "pki", "init", "--dir", ops).returncode == 0
    got = run("datafed", "pki", "request", "water-north", "--role", "node", "--dir", agency)
    assert got.returncode == 0 and "send this request to the federation operator" in got.stdout
    csr = tmp_path / "agency" / "node" / "water-north.csr"
    out = tmp_path / "agency" / "node" / "water-north.crt"
    got = run("datafed", "pki", "sign", str(csr), "--dir", ops, "--out", str(out))
    assert got.returncode == 0 and "signed node:water-north" in got.stdout and out.exists()
    assert not (tmp_path / "ops" / "node" / "water-north.key").exists()  # key stayed home
    one_line_error(
        run("datafed", "pki", "sign", str(csr), "--dir", ops),
        "'water-north' already holds a valid certificate: node:water-north",
    )
    assert run("datafed", "pki", "sign", str(csr), "--dir", ops, "--force").returncode == 0
    one_line_error(
        run("datafed", "pki", "request", "Water North", "--role", "node", "--dir", agency),
        "invalid party name 'Water North'",
    )


def test_versions():
    expected = version("datafed")
    for cmd in ("datafed", "datafed-node", "datafed-audit"):
        got = run(cmd, "--version")
        assert got.returncode == 0 and got.stdout.strip() == f"{cmd} {expected}"


def test_node_init_writes_every_key_with_its_meaning_and_the_file_validates(tmp_path):
    target = tmp_path / "node.toml"
    got = run("datafed-node", "init", "--name", "water-north", "--agency", "North Water",
              "--dataset", "pipe_incidents", "-o", str(target))  # fmt: skip
    assert got.returncode == 0, got.stderr
    cfg = load_node_config(target)
    assert (cfg.node.name, cfg.datasets[0].name) == ("water-north", "pipe_incidents")
    assert cfg.datasets[0].policy.allowed_requesters == []  # default-deny, as documented
    text = target.read_text()
    for sec in sections(NodeConfig):  # every key of every table is shown, with its meaning
        for key in sec.keys:
            assert f"{key.name} = " in text and key.meaning[:40] in " ".join(text.split()), key
    one_line_error(run("datafed-node", "init", "--name", "x", "-o", str(target)), "--force")
    # a config error shows the pattern as written (rich markup used to eat "[a-z0-9]")
    target.write_text(text.replace('name = "water-north"', 'name = "Water North"'))
    one_line_error(
        run("datafed-node", "check-config", "-c", str(target)),
        "node.name: String should match pattern '^([a-z][a-z0-9-]{0,30}:)?[a-z0-9][a-z0-9._-]{0,62}$'",
    )


def test_the_committed_configuration_reference_is_current():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    assert page == module.render(), "stale: run python docs/generate.py"
    for key in ("`health_listen`", "`crl`", "`allowed_models`", "`superlink_cert`"):
        assert key in page


def test_an_undocumented_field_fails_generation():
    class Documented(BaseModel):
        """A table."""

        #: Has a meaning.
        a: int = 1

    class Undocumented(Documented):
        """Another table."""

        b: int = 2

    assert [k.name for k in next(iter(sections(Documented))).keys] == ["a"]
    with pytest.raises(MissingDescription, match=r"Undocumented\.b is undocumented"):
        list(sections(Undocumented))


def test_every_command_lists_the_one_table_of_exit_codes():
    from audit.errors import EXIT_CODES_HELP

    for cmd in ("datafed", "datafed-node", "datafed-audit"):
        got = run(cmd, "--help")
        assert got.returncode == 0
        assert " ".join(EXIT_CODES_HELP.split()[:4]) in " ".join(got.stdout.split())
