r"""Launching the agency's Flower SuperNode beside its datafed node.

The SuperNode connects out to the federation's SuperLink (TLS, verified with the
federation CA) and runs datafed's ClientApp for every message. Its ``--node-config``
tells that ClientApp where its own node is: the node's ``node.toml`` (for the node's own
mTLS identity) and the node's actual address::

    python -m nodes.fl.runtime supernode --superlink 127.0.0.1:9093 \
        --root-certificates pki/ca.crt --port 9094 --poll-interval 0.1 --node-config \
        'datafed-node-config="/srv/node/node.toml" datafed-node-address="127.0.0.1:50051"'

That is Flower's ``flower-supernode`` with its idle waits cut and ClientApp tasks forked
from a preloaded zygote (:mod:`nodes.fl.runtime`). :func:`supernode_command` builds the
line; :func:`run_supernode` execs it (for a ``datafed-node supernode`` command). A
SuperLink run by a partner city is verified with that city's CA, from its trust bundle
(:func:`superlink_ca`, docs/federation.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from datafed.fl.superlink import FLOWER_ENV
from datafed.pki.trust import PartnerBundle, TrustStore
from nodes.config import NodeConfig
from nodes.fl.connect import NODE_ADDRESS_KEY, NODE_CONFIG_KEY

__all__ = ["node_config_arg", "run_supernode", "superlink_ca", "supernode_command"]


def superlink_ca(config: NodeConfig, path: Path | None = None) -> Path:
    """The CA file that verifies the SuperLink's certificate.

    ``path``: a PEM CA certificate, or a partner federation's trust bundle (a SuperLink
    run by a partner city, docs/federation.md): the bundle is checked as recognition
    checks it and its CA written to ``<state_dir>/superlink-ca.pem``. Default: the home
    CA (``tls.ca``).

    Raises
    ------
    PkiError
        A bundle that cannot be read or recognised.
    """
    if path is None:
        return config.tls.ca
    if not path.read_bytes().lstrip().startswith(b"{"):
        return path
    home = TrustStore(config.tls.ca.read_bytes()).federation
    bundle = PartnerBundle.read(path).check(home)
    out = config.node.state_dir / "superlink-ca.pem"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bundle.ca_pem)
    return out


def _quote(value: str) -> str:
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError(f"value may not contain quotes, backslashes or newlines: {value!r}")
    return f'"{value}"'


def node_config_arg(node_config: Path, node_address: str | None = None) -> str:
    """The ``--node-config`` value naming the node's config (and address)."""
    parts = [f"{NODE_CONFIG_KEY}={_quote(str(node_config.resolve()))}"]
    if node_address:
        parts.append(f"{NODE_ADDRESS_KEY}={_quote(node_address)}")
    return " ".join(parts)


def supernode_command(
    *,
    node_config: Path,
    superlink: str,
    port: int,
    root_certificates: Path | None = None,
    node_address: str | None = None,
    insecure: bool = False,
    max_wait_time_s: float | None = 300.0,
    poll_interval_s: float | None = None,
) -> list[str]:
    """Return the ``flower-supernode`` command line for the node at ``node_config``.

    Parameters
    ----------
    node_config : Path
        The node's ``node.toml``.
    superlink : str
        The SuperLink's Fleet API ``host:port``.
    port : int
        The SuperNode's own (loopback) Runtime API port.
    root_certificates : Path, optional
        The federation CA, to verify the SuperLink's certificate.
    node_address : str, optional
        The node's gRPC address, when it differs from its configured listen address.
    insecure : bool
        Connect without TLS (local experiments only).
    max_wait_time_s : float, optional
        Give up reconnecting to the SuperLink after this long.
    poll_interval_s : float, optional
        Seconds between pulls from the SuperLink while idle (default
        :data:`nodes.fl.runtime.POLL_S`; Flower's own is 3).

    Raises
    ------
    ValueError
        If neither ``root_certificates`` nor ``insecure`` is given.
    """
    cmd = [sys.executable, "-m", "nodes.fl.runtime", "supernode"]
    cmd += ["--superlink", superlink, "--port", str(port)]
    if poll_interval_s is not None:
        cmd += ["--poll-interval", str(poll_interval_s)]
    if insecure:
        cmd.append("--insecure")
    elif root_certificates is None:
        raise ValueError("the SuperNode needs root_certificates (the federation CA) or insecure")
    else:
        cmd += ["--root-certificates", str(root_certificates)]
    if max_wait_time_s is not None:
        cmd += ["--max-wait-time", str(max_wait_time_s)]
    cmd += ["--node-config", node_config_arg(node_config, node_address)]
    return cmd


def run_supernode(
    node_config: Path,
    superlink: str,
    port: int = 9094,
    root_certificates: Path | None = None,
    node_address: str | None = None,
    poll_interval_s: float | None = None,
) -> None:
    """Replace this process with the node's SuperNode (never returns)."""
    cmd = supernode_command(
        node_config=node_config,
        superlink=superlink,
        port=port,
        root_certificates=root_certificates,
        node_address=node_address,
        poll_interval_s=poll_interval_s,
    )
    # The SuperNode starts flower-superexec / flwr-clientapp by name: this venv first.
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, **FLOWER_ENV, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.execve(cmd[0], cmd, env)
