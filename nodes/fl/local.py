"""A whole Flower deployment on one machine, beside a local federation.

It runs beside a :class:`~datafed.local.federation.LocalFederation`.

For ``make demo``, the integration tests, the examples and anyone trying federated
training locally: a real ``flower-superlink`` process (TLS, a certificate with role
``superlink`` from the federation CA) and one real ``flower-supernode`` process per agency
node, each wired to its own node. Every process binds to 127.0.0.1 on a free port chosen
at run time and is stopped (with everything it spawned) by :meth:`LocalFlower.stop`.

>>> with LocalFederation.create(root, specs) as fed, LocalFlower(fed) as flower:  # doctest: +SKIP
...     fed.start(); flower.start()
...     train(flower.fed_toml, purpose="flood-risk-model", rounds=3)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from datafed import pki
from datafed.fl.superlink import SuperLink, free_port, start_process, stop_process
from datafed.local.federation import LocalFederation, LocalNode
from nodes.fl.supernode import supernode_command

__all__ = ["SUPERLINK_NAME", "LocalFlower"]

#: Name in the SuperLink's certificate (issued by the federation CA).
SUPERLINK_NAME = "superlink"


class LocalFlower:
    """SuperLink and SuperNode processes for the nodes of ``fed``.

    Parameters
    ----------
    fed : LocalFederation
        The local federation (CA, node configs; its nodes must be started first).
    stage_timeout_s : float
        Written into nothing; kept for callers that size timeouts from it.
    """

    def __init__(self, fed: LocalFederation) -> None:
        self.fed = fed
        self.root = fed.root / "flower"
        self.superlink: SuperLink | None = None
        self.superlink_address = ""
        self.supernodes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def fed_toml(self) -> Path:
        """The analyst's federation file with its ``[flower]`` table."""
        return self.fed.root / "fed-train.toml"

    def superlink_files(self) -> pki.IssuedFiles:
        """The SuperLink's certificate and keys (role ``superlink``), issued on first use."""
        files = pki.party_paths(self.fed.pki_dir, "superlink", SUPERLINK_NAME)
        if not files.cert.exists():
            pki.issue(self.fed.pki_dir, "superlink", SUPERLINK_NAME, force=True)
        return files

    def start_superlink(self, timeout_s: float = 60.0) -> str:
        """Start the SuperLink with TLS; return its ``host:port``."""
        files = self.superlink_files()
        self.root.mkdir(parents=True, exist_ok=True)
        self.superlink = SuperLink(
            f"127.0.0.1:{free_port()}",
            files.cert,
            files.key,
            self.fed.pki_dir / "ca.crt",
            self.root / "superlink.log",
        )
        self.superlink_address = self.superlink.start(timeout_s)
        return self.superlink_address

    def start_supernode(self, node: LocalNode) -> subprocess.Popen[bytes]:
        """Start the SuperNode of one (running) node."""
        if not self.superlink_address:
            raise RuntimeError("start the SuperLink first")
        if not node.address:
            raise RuntimeError(f"node {node.spec.name} is not running")
        cmd = supernode_command(
            node_config=node.config,
            node_address=node.address,
            superlink=self.superlink_address,
            port=free_port(),
            root_certificates=self.fed.pki_dir / "ca.crt",
        )
        log = self.root / f"supernode-{node.spec.name}.log"
        proc = start_process(cmd, log, cwd=self.root)
        self.supernodes[node.spec.name] = proc
        return proc

    def start(self) -> None:
        """Start the SuperLink and a SuperNode per node; write the analyst's file."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_superlink()
        for node in self.fed.nodes:
            self.start_supernode(node)
        self.write_fed_toml()

    def write_fed_toml(self, analyst: str = "alice") -> Path:
        """Write ``fed-train.toml``: the federation file plus the ``[flower]`` table."""
        base = self.fed.write_fed_toml(analyst, path=self.root / f"fed-{analyst}.toml")
        text = base.read_text(encoding="utf-8")
        text += (
            "\n[flower]\n"
            f'superlink = "{self.superlink_address}"\n'
            f'root_certificates = "{self.fed.pki_dir / "ca.crt"}"\n'
            "connect_timeout_s = 900\n"
        )
        name = "fed-train.toml" if analyst == "alice" else f"fed-train-{analyst}.toml"
        target = self.fed.root / name
        target.write_text(text, encoding="utf-8")
        return target

    def stop_supernode(self, name: str) -> int | None:
        """Stop one SuperNode (e.g. to make it drop out); return its exit code."""
        proc = self.supernodes.pop(name, None)
        return stop_process(proc) if proc is not None else None

    def stop(self) -> None:
        """Stop every SuperNode, then the SuperLink (and everything they spawned)."""
        for name in list(self.supernodes):
            self.stop_supernode(name)
        if self.superlink is not None:
            self.superlink.stop()
            self.superlink = None

    def __enter__(self) -> LocalFlower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
