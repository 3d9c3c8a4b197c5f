"""A whole federation on one machine: CA, party certificates, seeded data, node processes.

Used by ``make demo``, the integration tests and anyone trying datafed locally.  Every
node is a real ``datafed-node serve`` process on 127.0.0.1 with mTLS, over its own SQLite
file; the analyst's ``fed.toml`` is written next to them.

>>> with LocalFederation.create(Path("run")) as fed:       # doctest: +SKIP
...     fed.start()
...     Federation.from_file(fed.fed_toml).query(...)
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafed import pki
from datafed.errors import DatafedError
from datafed.local import synth
from datafed.pki.identity import qualify

__all__ = [
    "DEFAULT_DISTRICTS",
    "FINANCE_PURPOSE",
    "LocalFederation",
    "LocalNode",
    "NodeSpec",
    "finance_specs",
]

log = logging.getLogger(__name__)
DEFAULT_DISTRICTS = ("water-north", "water-east", "water-south")
ANALYST = "alice"
PURPOSE = "service-planning"
#: The purpose the finance nodes of :func:`finance_specs` allow.
FINANCE_PURPOSE = "small-business-credit-research"


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeSpec:
    """What one local node serves: its datasets (name, columns, rows) and policy text."""

    name: str
    agency: str
    datasets: list[tuple[str, Sequence[tuple[str, str]], list[tuple[Any, ...]]]]
    policy_toml: str = ""
    #: A policy of its own for some datasets (name -> ``[datasets.policy]`` body).
    dataset_policies: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalNode:
    """A running (or stopped) node process."""

    spec: NodeSpec
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    address: str = ""


def _default_policy(
    protections: str = '["paillier", "plain", "shares", "secagg", "ckks"]',
    requesters: Sequence[str] = (ANALYST,),
) -> str:
    listed = ", ".join(f'"{r}"' for r in requesters)
    return (
        f"allowed_requesters = [{listed}]\n"
        f'allowed_purposes = ["{PURPOSE}"]\n'
        'allowed_aggregates = ["sum", "count", "avg", "var", "min", "max", "histogram"]\n'
        f"allowed_protections = {protections}\n"
        "min_group_size = 3\n"
        "person_level = false  # pipe incidents describe pipes, not persons\n"
        "[datasets.policy.group_domains]\n"
        'material = ["cast_iron", "ductile_iron", "steel", "pvc"]\n'
        "year = [2022, 2023, 2024]\n"
        "month = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n"
    )


def _servers(specs: Sequence[NodeSpec]) -> dict[str, list[str]]:
    """Dataset name -> the nodes that serve it, in order."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        for name, _, _ in spec.datasets:
            out.setdefault(name, []).append(spec.name)
    return out


def with_consortium(policy: str, nodes: Sequence[str]) -> str:
    """An exact dataset's ``[datasets.policy]`` body with its consortium: every serving node.

    A body that names its own consortium, or has a DP section, is left as it is.
    """
    if "consortium" in policy or "[datasets.policy.dp]" in policy:
        return policy
    names = ", ".join(f'"{n}"' for n in nodes)
    return f"consortium = [{names}]\n{policy}"


def water_district_specs(
    seed: int = 7, segments: int = 300, *, requesters: Sequence[str] = (ANALYST,)
) -> list[NodeSpec]:
    """Three district water offices, each with its own pipe-incident table.

    ``requesters`` are the analysts every office's policy allows (default: ``alice``).
    """
    out = []
    for name in DEFAULT_DISTRICTS:
        district = name.split("-", 1)[1]
        rows = synth.pipe_incidents(district, seed=seed, segments=segments)
        out.append(
            NodeSpec(
                name=name,
                agency=f"{district.title()} District Water Office",
                datasets=[("pipe_incidents", synth.PIPE_COLUMNS, rows)],
                policy_toml=_default_policy(requesters=requesters),
            )
        )
    return out


#: The finance nodes' DP sections (taxpayers and loans are person-level data).
FINANCE_DP = {
    "tax-bureau": "epsilon_per_query = 0.5\nbudget_epsilon = 5.0\n",
    "city-bank": (
        "epsilon_per_query = 1.0\nbudget_epsilon = 10.0\nbounds = { amount = [0, 1000000.0] }\n"
    ),
}


def _finance_policy(node: str, exact: bool) -> str:
    operations = '["intersection_sum"]' if exact else '["query", "intersection_sum"]'
    head = (
        f'allowed_requesters = ["{ANALYST}"]\n'
        f'allowed_purposes = ["{FINANCE_PURPOSE}"]\n'
        f"allowed_operations = {operations}\n"
        'allowed_protections = ["paillier"]\n'
        "min_group_size = 5\n"
        'identifier_columns = ["person_id"]\n'
    )
    if exact:  # tests of the protocol's arithmetic only: real person-level data takes DP
        return head + "person_level = false\n"
    return head + "[datasets.policy.dp]\n" + FINANCE_DP[node]


def finance_specs(
    seed: int = 7, taxpayers: int = 2000, loans: int = 800, *, exact: bool = False
) -> list[NodeSpec]:
    """The tax bureau (taxpayers) and a city bank (loans), for intersection-sum.

    About 60% of the loan applicants are taxpayers (see :func:`datafed.local.synth.loans`);
    both datasets allow ``intersection_sum`` for :data:`FINANCE_PURPOSE`. They are
    person-level, so both policies have a DP section (:data:`FINANCE_DP`); ``exact``
    releases them exactly instead (``person_level = false``), for tests that check the
    protocol's arithmetic against a cleartext join.
    """
    tax = synth.taxpayers(seed=seed, count=taxpayers)
    bank = synth.loans(seed=seed, count=loans, id_space=taxpayers)
    return [
        NodeSpec(
            name="tax-bureau",
            agency="City Tax Bureau",
            datasets=[("taxpayers", synth.TAXPAYER_COLUMNS, tax)],
            policy_toml=_finance_policy("tax-bureau", exact),
        ),
        NodeSpec(
            name="city-bank",
            agency="City Commercial Bank",
            datasets=[("loans", synth.LOAN_COLUMNS, bank)],
            policy_toml=_finance_policy("city-bank", exact),
        ),
    ]


@dataclass
class LocalFederation:
    """Files and processes of a local federation rooted at ``root``."""

    root: Path
    nodes: list[LocalNode] = field(default_factory=list)
    timeout_s: float = 30.0
    paillier_bits: int = 2048
    #: The trust domain (docs/federation.md): names are qualified unless it is the default.
    federation: str = pki.DEFAULT_FEDERATION
    #: Partner trust bundles the analysts' fed.toml lists.
    partner_bundles: list[Path] = field(default_factory=list)
    #: Nodes of partner federations the analysts' fed.toml lists too: ``(name, address)``.
    partner_nodes: list[tuple[str, str]] = field(default_factory=list)

    def qname(self, name: str) -> str:
        """``name`` as this federation's certificates speak it (``shanghai:alice``)."""
        return qualify(self.federation, name)

    @property
    def pki_dir(self) -> Path:
        """The CA and party certificates."""
        return self.root / "pki"

    @property
    def fed_toml(self) -> Path:
        """The analyst's federation file."""
        return self.root / "fed.toml"

    @classmethod
    def create(
        cls,
        root: Path,
        specs: Sequence[NodeSpec] | None = None,
        *,
        analysts: Sequence[str] = (ANALYST,),
        progress: Callable[[str], None] = lambda _msg: None,
        witnesses: bool = False,
        publish_interval_s: float = 2.0,
        federation: str = pki.DEFAULT_FEDERATION,
    ) -> LocalFederation:
        """Make the CA, certificates, data files and node configs under ``root``.

        With ``witnesses=True`` every node witnesses the logs of all the others and asks
        them to cosign its checkpoints every ``publish_interval_s`` seconds (``[witness]``
        and ``[publish]`` in each node.toml); the nodes then listen on fixed free ports.
        ``federation`` names the trust domain: every name in the files is then qualified
        (``shanghai:water-north``; specs and policies must use qualified names too).
        """
        root.mkdir(parents=True, exist_ok=True)
        fed = cls(root=root.resolve(), federation=federation)
        if not (fed.pki_dir / "ca.crt").exists():
            progress("creating the federation CA")
            title = "city data bureau federation CA"
            pki.init_ca(fed.pki_dir, f"{federation} {title}", federation=federation)
        for role, name in [("analyst", a) for a in analysts] + [("auditor", "regulator")]:
            fed._ensure_party(role, name, progress)
        specs = list(specs if specs is not None else water_district_specs())
        for spec in specs:
            fed._ensure_party("node", spec.name, progress)
            progress(f"writing node:{spec.name}'s synthetic data and node.toml")
            fed.nodes.append(fed._write_node(spec, _servers(specs)))
        if witnesses:
            fed._add_witnessing(publish_interval_s)
        return fed

    def _add_witnessing(self, interval_s: float) -> None:
        """Pin fixed ports and append ``[witness]``/``[publish]`` to every node.toml."""
        ports = {n.spec.name: _free_port() for n in self.nodes}
        for node in self.nodes:
            text = node.config.read_text().replace(
                'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{ports[node.spec.name]}"'
            )
            peers = [n.spec.name for n in self.nodes if n is not node]
            certs = {p: pki.party_paths(self.pki_dir, "node", p).cert for p in peers}
            lines = ["", "[witness]", "peers = [" + ", ".join(f'"{certs[p]}"' for p in peers)]
            lines += ["]", "", "[publish]", f"interval_s = {interval_s}"]
            for p in peers:
                lines += ["", "[[publish.witnesses]]", f'name = "{self.qname(p)}"']
                lines += [f'address = "127.0.0.1:{ports[p]}"', f'cert = "{certs[p]}"']
            node.config.write_text(text + "\n".join(lines) + "\n")

    def _ensure_party(self, role: str, name: str, progress: Callable[[str], None]) -> None:
        """Issue a certificate unless one was already issued (e.g. with ``datafed pki``)."""
        if not pki.party_paths(self.pki_dir, role, name).cert.exists():
            progress(f"issuing {role}:{name}")
            pki.issue(self.pki_dir, role, name)

    def tls_table(self, role: str, name: str) -> list[str]:
        """The ``[tls]`` table of a party's config file: the CA, its certificate and keys."""
        files = pki.party_paths(self.pki_dir, role, name)
        return [
            "[tls]",
            f'ca = "{self.pki_dir / "ca.crt"}"',
            f'cert = "{files.cert}"',
            f'key = "{files.key}"',
            f'signing_key = "{files.signing_key}"',
        ]

    def _write_node(self, spec: NodeSpec, servers: dict[str, list[str]]) -> LocalNode:
        ndir = self.root / "nodes" / spec.name
        ndir.mkdir(parents=True, exist_ok=True)  # also for a node that only aggregates
        lines = [
            "[node]",
            f'name = "{self.qname(spec.name)}"',
            f'agency = "{spec.agency}"',
            'listen = "127.0.0.1:0"',
            'state_dir = "state"',
            "",
            *self.tls_table("node", spec.name),
        ]
        for name, columns, rows in spec.datasets:
            synth.write_table(ndir / "data" / f"{name}.sqlite", name, columns, rows)
            lines += ["", "[[datasets]]", f'name = "{name}"', f'path = "data/{name}.sqlite"']
            policy = spec.dataset_policies.get(name, spec.policy_toml)
            members = [self.qname(n) for n in servers[name]]
            lines += ["", "[datasets.policy]", with_consortium(policy, members)]
        config = ndir / "node.toml"
        config.write_text("\n".join(lines) + "\n")
        return LocalNode(spec=spec, config=config, log=ndir / "node.log")

    def write_fed_toml(self, analyst: str = ANALYST, path: Path | None = None) -> Path:
        """Write the analyst's federation file with the nodes' live addresses."""
        lines = [
            f'analyst = "{self.qname(analyst)}"',
            f"timeout_s = {self.timeout_s}",
        ]
        if self.partner_bundles:
            lines.append("partners = [" + ", ".join(f'"{b}"' for b in self.partner_bundles) + "]")
        lines += ["", *self.tls_table("analyst", analyst)]
        nodes = [(self.qname(n.spec.name), n.address) for n in self.nodes]
        for name, address in [*nodes, *self.partner_nodes]:
            lines += ["", "[[nodes]]", f'name = "{name}"', f'address = "{address}"']
        lines += ["", "[modes.paillier]", f"bits = {self.paillier_bits}"]
        target = path or (
            self.fed_toml if analyst == ANALYST else self.root / f"fed-{analyst}.toml"
        )
        target.write_text("\n".join(lines) + "\n")
        return target

    def start(self, *, ready_timeout_s: float = 60.0) -> None:
        """Start every node process and wait until each says it is serving."""
        for node in self.nodes:
            self.start_node(node, ready_timeout_s=ready_timeout_s)
        self.write_fed_toml()

    def start_node(self, node: LocalNode, *, ready_timeout_s: float = 60.0) -> None:
        """Start one node and wait for its READY line."""
        exe = Path(sys.executable).parent / "datafed-node"
        cmd = [str(exe), "serve", "--config", str(node.config)]
        log = node.log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        node.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True
        )
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = node.process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2).decode()
            except queue.Empty:
                if node.process.poll() is not None:
                    break
                continue
            if line.startswith("READY "):
                node.address = dict(p.split("=", 1) for p in line.split()[1:])["address"]
                return
        self.stop()
        tail = node.log.read_text(errors="replace")[-2000:] if node.log.exists() else ""
        raise DatafedError(f"node {node.spec.name} did not start; its log ends:\n{tail}")

    def stop_node(self, node: LocalNode, timeout_s: float = 15.0) -> int | None:
        """Stop one node with SIGTERM (SIGKILL after ``timeout_s``); return its exit code."""
        proc = node.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        node.process = None
        code = proc.returncode
        if code is not None and code < 0 and code != -signal.SIGKILL:  # SIGSEGV, SIGABRT:
            tail = node.log.read_text(errors="replace")[-6000:]  # faulthandler's stacks
            log.warning("node %s died of signal %d; its log ends:\n%s", node.spec.name, -code, tail)
        return code

    def stop(self) -> list[int | None]:
        """Stop every node; return their exit codes."""
        return [self.stop_node(n) for n in self.nodes]

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
