"""Collection on PostgreSQL: two aggregators, each several processes over its own database.

:func:`pg_federation` starts the Leader (``water-north``) and the Helper (``water-east``)
as ``datafed-node serve`` processes whose tasks live in two databases of the session's
real PostgreSQL server (two agencies, two databases), each with its own worker processes
(``[collect_service] workers``); :func:`start_worker` starts one more by hand (a front end,
or a worker under a skewed clock).
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafed.collect.local import LocalTask, add_collection
from datafed.local.federation import LocalFederation, water_district_specs
from tests.engines.pg import ADMIN, PgServer

LEADER, HELPER = "water-north", "water-east"
PASSWORD_ENV = "DATAFED_TEST_COLLECT_PG"


def service(pg: PgServer, db: str, workers: int, lease_s: float = 2.0) -> str:
    """The body of a ``[collect_service]`` table on database ``db`` of ``pg``."""
    return (
        f'database = "postgresql://{ADMIN}@127.0.0.1:{pg.port}/{db}"\n'
        f'password_env = "{PASSWORD_ENV}"\nworkers = {workers}\nlease_s = {lease_s}\n'
    )


def pg_federation(
    root: Path,
    pg: PgServer,
    tasks: Sequence[LocalTask],
    *,
    leader_workers: int = 1,
    helper_workers: int = 1,
) -> LocalFederation:
    """Create two databases and start both aggregators on them (see module docs)."""
    os.environ[PASSWORD_ENV] = pg.admin_password
    dbs = {n: f"collect_{n.replace('-', '_')}_{secrets.token_hex(4)}" for n in (LEADER, HELPER)}
    with pg.connect() as conn:
        for db in dbs.values():
            conn.execute(f'CREATE DATABASE "{db}"')
    fed = LocalFederation.create(root, water_district_specs(segments=10)[:2])
    add_collection(
        fed,
        tasks,
        gateways=("gw-city",),
        services={
            LEADER: service(pg, dbs[LEADER], leader_workers),
            HELPER: service(pg, dbs[HELPER], helper_workers),
        },
    )
    fed.start()
    fed.databases = dbs  # type: ignore[attr-defined]
    return fed


def query(pg: PgServer, fed: LocalFederation, node: str, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` in ``node``'s collection database (its task schemas on the path)."""
    db = fed.databases[node]  # type: ignore[attr-defined]
    with pg.connect(db) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'collect_%'"
            ).fetchall()
        ]
        conn.execute("SET search_path = " + ", ".join(f'"{s}"' for s in schemas))
        return [tuple(r) for r in conn.execute(sql).fetchall()]


@dataclass
class Worker:
    """A ``datafed-node collect-worker`` process started by a test."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path

    def stop(self) -> None:
        """SIGTERM to its process group (a wrapper such as faketime forks the worker)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def strays(root: Path) -> list[int]:
    """Processes still running with a ``--config`` under ``root`` (none once all stopped)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(a.startswith(str(root).encode()) for a in cmd):
            out.append(int(d.name))
    return out


def stop_all(fed: LocalFederation, *workers: Worker, wait_s: float = 10.0) -> None:
    """Stop ``workers`` and the federation; assert that no process of it is left running.

    ``serve`` stops its own workers; one it could not (it was killed) stops by itself when
    it sees its ``serve`` gone. Any process left after ``wait_s`` is killed and reported.
    """
    for wk in workers:
        wk.stop()
    fed.stop()
    deadline = time.monotonic() + wait_s
    while (left := strays(fed.root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after the federation stopped: {left}"


def start_worker(
    fed: LocalFederation,
    node: str,
    *args: str,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Worker:
    """Start one worker of ``node`` (``--listen ADDR``, ``--no-jobs``...); wait for READY."""
    cfg = next(n.config for n in fed.nodes if n.spec.name == node)
    exe = Path(sys.executable).parent / "datafed-node"
    log = cfg.parent / f"worker-{secrets.token_hex(3)}.log"
    proc = subprocess.Popen(
        [*prefix, str(exe), "collect-worker", "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in out], daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2).decode()
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith("READY "):
            fields = dict(p.split("=", 1) for p in line.split()[1:])
            return Worker(proc, fields.get("address", ""), log)
    proc.kill()
    raise AssertionError(f"worker did not start: {log.read_text(errors='replace')[-2000:]}")
