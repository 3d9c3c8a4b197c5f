"""Collection tasks on a local federation (tests, the sensors example, the benchmark).

:func:`add_collection` takes a :class:`datafed.local.federation.LocalFederation` created but not yet
started, pins its aggregators to fixed free ports (the Leader must reach the Helper at a
known address, also after the Helper restarts), issues gateway certificates, appends one
``[[collect]]`` block per task to both aggregators' ``node.toml`` and writes one
``gateway-<name>.toml`` per gateway::

    fed = LocalFederation.create(root, water_district_specs()[:2])
    task = LocalTask("water-use", 'vdaf = "count"', "water-north", "water-east")
    gateways = add_collection(fed, [task])
    fed.start()
    uploader = Uploader.from_file(gateways["gw-city"])
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from datafed import pki
from datafed.local.federation import LocalFederation, LocalNode

__all__ = ["LocalTask", "add_collection", "gateway_file"]


@dataclass(frozen=True)
class LocalTask:
    """One task: its name, its ``[[collect]]`` body (TOML lines) and its two aggregators."""

    name: str
    body: str
    leader: str
    helper: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_collection(
    fed: LocalFederation,
    tasks: Sequence[LocalTask],
    *,
    gateways: Sequence[str] = ("gw-city",),
    collectors: Mapping[str, Sequence[str]] | None = None,
    services: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Configure ``tasks`` on ``fed`` (see module docs); return each gateway's file.

    Parameters
    ----------
    collectors
        Analyst -> purposes it may collect for (default: ``alice`` for
        ``service-planning``); each analyst gets a certificate if it has none.
    services
        Node -> the body of its ``[collect_service]`` table (e.g. a PostgreSQL
        ``database`` and ``workers``); nodes not named keep the one-process default.
    """
    collectors = collectors or {"alice": ["service-planning"]}
    nodes = {n.spec.name: n for n in fed.nodes}
    ports = _fix_ports(nodes.values())
    for role, names in (("gateway", gateways), ("analyst", list(collectors))):
        for name in names:
            if not pki.party_paths(fed.pki_dir, role, name).cert.exists():
                pki.issue(fed.pki_dir, role, name)
    for t in tasks:
        block = _block(fed, t, ports, collectors)
        for name in (t.leader, t.helper):
            node = nodes[name]
            node.config.write_text(node.config.read_text() + block)
    for name, body in (services or {}).items():
        node = nodes[name]
        node.config.write_text(node.config.read_text() + "\n[collect_service]\n" + body + "\n")
    out = {}
    leaders = sorted({t.leader for t in tasks})
    for gw in gateways:
        out[gw] = fed.root / f"gateway-{gw}.toml"
        out[gw].write_text(_gateway_toml(fed, gw, leaders[0], ports[leaders[0]]))
    return out


def _fix_ports(nodes: Iterable[LocalNode]) -> dict[str, int]:
    """Each node's port, a free one written into its config where it listens on port 0."""
    ports: dict[str, int] = {}
    for node in nodes:
        text = node.config.read_text()
        if 'listen = "127.0.0.1:0"' in text:
            ports[node.spec.name] = _free_port()
            text = text.replace(
                'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{ports[node.spec.name]}"'
            )
            node.config.write_text(text)
        else:
            ports[node.spec.name] = int(text.split('listen = "127.0.0.1:', 1)[1].split('"')[0])
    return ports


def gateway_file(fed: LocalFederation, gw: str, leader: str, address: str, path: Path) -> Path:
    """Write a gateway file that uploads to ``address`` (e.g. an upload front end)."""
    port = int(address.rsplit(":", 1)[1])
    path.write_text(_gateway_toml(fed, gw, leader, port))
    return path


def _gateway_toml(fed: LocalFederation, gw: str, leader: str, port: int) -> str:
    """The gateway's file: its certificate and keys, and the leader it uploads to."""
    lines = [
        f'gateway = "{gw}"',
        f"timeout_s = {fed.timeout_s}",
        "",
        *fed.tls_table("gateway", gw),
        "",
        "[leader]",
        f'name = "{leader}"',
        f'address = "127.0.0.1:{port}"',
    ]
    return "\n".join(lines) + "\n"


def _block(
    fed: LocalFederation,
    t: LocalTask,
    ports: Mapping[str, int],
    collectors: Mapping[str, Sequence[str]],
) -> str:
    lines = ["", "[[collect]]", f'name = "{t.name}"', t.body.strip()]
    for role, name in (("leader", t.leader), ("helper", t.helper)):
        cert = pki.party_paths(fed.pki_dir, "node", name).cert
        lines += [
            f"[collect.{role}]",
            f'name = "{name}"',
            f'cert = "{cert}"',
            f'address = "127.0.0.1:{ports[name]}"',
        ]
    for analyst, purposes in collectors.items():
        listed = ", ".join(f'"{p}"' for p in purposes)
        lines += ["[[collect.collectors]]", f'name = "{analyst}"', f"purposes = [{listed}]"]
    return "\n".join(lines) + "\n"
