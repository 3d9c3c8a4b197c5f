"""Starting and stopping Flower processes: the SuperLink, free ports, clean stops.

The SuperLink (Flower's coordinator: Fleet, Control and Runtime APIs on one HTTPS port)
runs wherever the federation operator or the analyst chooses: ``datafed superlink`` for a
standing one, or ``datafed train --start-superlink`` for one that lives as long as the
analyst's job (:class:`SuperLink`). Its TLS certificate comes from the federation CA
(role ``superlink``), so SuperNodes and the analyst verify it with the CA they already
trust. ``--disable-runtime-dependency-installation``: apps are installed code, never
fetched at run time. Every Flower program is started from this interpreter's own
``bin`` folder, and so are the programs they start (``PATH`` is set for them), so nothing
depends on the virtualenv being activated.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "FLOWER_ENV",
    "SuperLink",
    "child_env",
    "free_port",
    "split_address",
    "start_process",
    "stop_process",
    "superlink_command",
    "wait_for_port",
]


#: Set for every Flower process datafed starts. Flower's telemetry (on by default) posts
#: each process start and exit, with the machine's platform, to Flower's servers, and a
#: process waits up to 4 s at exit for the post: an agency's node never phones home.
FLOWER_ENV = {"PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0"}


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def superlink_command(
    *,
    port: int,
    host: str = "127.0.0.1",
    certfile: Path | None = None,
    keyfile: Path | None = None,
    ca_certfile: Path | None = None,
    database: Path | None = None,
    insecure: bool = False,
) -> list[str]:
    """Return the ``flower-superlink`` command line.

    Raises
    ------
    ValueError
        If neither TLS files nor ``insecure`` are given.
    """
    cmd = [_bin("flower-superlink"), "--host", host, "--port", str(port)]
    cmd.append("--disable-runtime-dependency-installation")
    if insecure:
        cmd.append("--insecure")
    elif certfile is None or keyfile is None or ca_certfile is None:
        raise ValueError("the SuperLink needs certfile, keyfile and ca_certfile (or insecure)")
    else:
        cmd += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
        cmd += ["--ssl-ca-certfile", str(ca_certfile)]
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Block until ``host:port`` accepts connections.

    Raises
    ------
    RuntimeError
        If the process exits first or the port is not open within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout_s:g}s")


def start_process(
    cmd: Sequence[str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env(),
            start_new_session=True,
        )


def child_env() -> dict[str, str]:
    """The environment for Flower processes: this interpreter's scripts first on PATH.

    SuperLink and SuperNode start ``flower-superexec`` / ``flwr-clientapp`` by name, which
    must resolve to this virtualenv even when it is not activated (``make test``); and no
    Flower process sends telemetry (:data:`FLOWER_ENV`).
    """
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {**os.environ, **FLOWER_ENV, "PATH": f"{bindir}{os.pathsep}{path}"}


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """Stop a process started by :func:`start_process` and everything it spawned.

    SIGTERM to its process group (Flower's SuperLink and SuperNode start SuperExec and
    app processes), SIGKILL after ``timeout_s``.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group (app processes)
    except ProcessLookupError:
        pass
    proc.wait()
    return proc.returncode


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)`` (IPv6 hosts in brackets)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class SuperLink:
    """A ``flower-superlink`` process with the federation's TLS files, as a context manager.

    Parameters
    ----------
    address : str
        ``host:port`` to listen on (the address SuperNodes and ``flwr run`` use).
    certfile, keyfile, ca_certfile : Path
        Its certificate (role ``superlink``), TLS key and the federation CA.
    log : Path
        Where its output goes.
    """

    def __init__(
        self, address: str, certfile: Path, keyfile: Path, ca_certfile: Path, log: Path
    ) -> None:
        self.host, self.port = split_address(address)
        self.files = (certfile, keyfile, ca_certfile)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the running SuperLink."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> str:
        """Start it and wait until it accepts connections; return its address.

        Raises
        ------
        RuntimeError
            If it exits or does not listen within ``timeout_s`` (with its log's tail).
        """
        for f in self.files:
            if not f.exists():
                raise FileNotFoundError(f"SuperLink TLS file not found: {f}")
        cert, key, ca = self.files
        cmd = superlink_command(
            host=self.host, port=self.port, certfile=cert, keyfile=key, ca_certfile=ca
        )
        self.proc = start_process(cmd, self.log, cwd=self.log.parent)
        try:
            wait_for_port(self.host, self.port, timeout_s, self.proc)
        except RuntimeError as exc:
            self.stop()
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"the SuperLink did not start: {exc}\n{tail}") from exc
        return self.address

    def stop(self) -> None:
        """Stop it and everything it started."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> SuperLink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
