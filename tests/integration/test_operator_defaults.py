"""``datafed-node init`` writes secure, fast defaults; ``check-config`` warns about weak ones.

The real command in a fresh folder, as an operator meets it: the node.toml names the
federation's revocation list (``tls.crl``), sets DuckDB for the first dataset, and either
names witness peers (``--peer``) or says in the file that it names none; ``check-config``
refuses a missing or foreign CRL (serve would) and warns about a node nobody witnesses,
``--strict`` making warnings fatal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from datafed import pki
from datafed.pki.registry import publish_crl
from nodes.config import load_node_config

NODE_BIN = Path(sys.executable).parent / "datafed-node"


def node_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NODE_BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An agency's folder: the CA's certificate, this node's and a peer's, a small CSV."""
    root = tmp_path_factory.mktemp("site")
    pki.init_ca(root / "pki", "test CA")
    for name in ("water-north", "water-east"):
        pki.issue(root / "pki", "node", name)
    (root / "visits.csv").write_text("district,year,visits\nnorth,2023,4\nnorth,2024,7\n")
    return root


def test_init_writes_crl_duckdb_and_an_explicit_no_witness_choice(site: Path) -> None:
    done = node_cli(site, "init", "--name", "water-north", "--dataset", "visits")
    assert done.returncode == 0, done.stderr
    assert "no --peer" in done.stderr
    text = (site / "node.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["tls"]["crl"] == "pki/crl.pem"
    assert raw["datasets"][0]["path"] == "data/visits.duckdb"
    assert "witness" not in raw and "publish" not in raw
    assert "NO WITNESSES (an explicit choice" in text
    cfg = load_node_config(site / "node.toml")
    assert cfg.tls.crl == (site / "pki" / "crl.pem").resolve()

    done = node_cli(site, "import", "-c", "node.toml", "-d", "visits", "visits.csv")
    assert done.returncode == 0, done.stderr
    assert "(duckdb:" in done.stdout

    # The CRL is not published yet: serve would stop, so check-config refuses.
    done = node_cli(site, "check-config", "-c", "node.toml")
    assert done.returncode == 1
    assert "problem: tls.crl: file not found" in done.stderr
    assert "datafed pki crl" in done.stderr
    # A list signed by another CA is refused too.
    pki.init_ca(site / "other-ca", "someone else")
    (site / "pki" / "crl.pem").write_bytes(publish_crl(site / "other-ca").read_bytes())
    done = node_cli(site, "check-config", "-c", "node.toml")
    assert done.returncode == 1 and "not signed by the federation CA" in done.stderr

    publish_crl(site / "pki")
    done = node_cli(site, "check-config", "-c", "node.toml")
    assert done.returncode == 0, done.stderr
    assert "duckdb" in done.stdout
    assert "warning: no [publish] witnesses" in done.stderr
    assert "warning: tls.crl" not in done.stderr
    done = node_cli(site, "check-config", "-c", "node.toml", "--strict")
    assert done.returncode == 1 and "(--strict)" in done.stderr


def test_init_with_peers_writes_witness_and_publish(site: Path) -> None:
    done = node_cli(
        site,
        "init",
        "--name",
        "water-north",
        "--dataset",
        "visits",
        "--peer",
        "water-east=127.0.0.1:50071",
        "--peer",
        "water-south=127.0.0.1:50072",
        "--out",
        "peers.toml",
    )
    assert done.returncode == 0, done.stderr
    assert "no --peer" not in done.stderr
    raw = tomllib.loads((site / "peers.toml").read_text())
    assert raw["witness"]["peers"] == ["pki/node/water-east.crt", "pki/node/water-south.crt"]
    assert [(w["name"], w["address"]) for w in raw["publish"]["witnesses"]] == [
        ("water-east", "127.0.0.1:50071"),
        ("water-south", "127.0.0.1:50072"),
    ]
    # The peer whose certificate is missing is named; once it is there, no witness warning.
    done = node_cli(site, "check-config", "-c", "peers.toml")
    assert done.returncode == 1
    assert "publish.witnesses.1.cert: file not found" in done.stderr
    pki.issue(site / "pki", "node", "water-south")
    publish_crl(site / "pki")
    (site / "data").mkdir(exist_ok=True)
    done = node_cli(site, "check-config", "-c", "peers.toml", "--strict")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr


def test_check_config_warns_about_what_weakens_security(site: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "weak.toml"
    text = (site / "node.toml").read_text()
    text = text.replace('crl = "pki/crl.pem"\n', "")
    text = text.replace(
        "[node]\n",
        '[node]\nhealth_listen = "0.0.0.0:50052"\nmetrics_listen = "10.1.2.3:9464"\n',
        1,
    )
    text = text.replace("pki/", f"{site}/pki/").replace("data/", f"{site}/data/")
    cfg.write_text(text)
    bad = node_cli(site, "init", "--name", "water-north", "--peer", "water-east", "-o", "x.toml")
    assert bad.returncode == 2 and "NAME=HOST:PORT" in bad.stderr
    assert not (site / "x.toml").exists()
    done = node_cli(site, "check-config", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "warning: tls.crl is not set" in done.stderr
    assert "warning: node.health_listen = '0.0.0.0:50052' is plaintext" in done.stderr
    assert "warning: node.metrics_listen = '10.1.2.3:9464' is plaintext" in done.stderr
