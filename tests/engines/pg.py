"""A real PostgreSQL server for the test session: initdb + postgres on a loopback port.

initdb and postgres refuse to run as root, so as root the server runs as the ``postgres``
system user (or ``nobody``) in a directory it owns.  The binaries come from
``DATAFED_PG_BIN``, ``PATH`` or Debian's ``/usr/lib/postgresql/<version>/bin``;
``make setup``/``.ci/run`` install them where absent.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADMIN = "datafed_admin"


def pg_bindir() -> Path | None:
    env = os.environ.get("DATAFED_PG_BIN")
    if env:
        return Path(env)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    admin_password: str
    process: subprocess.Popen[bytes]
    command: list[str] | None = None
    options: dict[str, Any] | None = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (fast shutdown), wait ``down_s``, start it on the same data."""
        assert self.command is not None and self.options is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(30)
        time.sleep(down_s)
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.options,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect().close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ADMIN,
            password=self.admin_password,
            dbname=dbname,
            autocommit=True,
        )

    def create_table(
        self,
        dbname: str,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Any]],
        *,
        reader: str,
        password: str,
    ) -> str:
        """Create a database with one table and a read-only login role; return its URL."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (reader,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE \"{reader}\" LOGIN PASSWORD '{password}'")
        with self.connect(dbname) as conn:
            cols = ", ".join(f'"{n}" {t}' for n, t in columns)
            conn.execute(f'CREATE TABLE "{table}" ({cols})')
            names = ", ".join(f'"{n}"' for n, _ in columns)
            with conn.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(f'GRANT SELECT ON "{table}" TO "{reader}"')
        return f"postgresql://{reader}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_pg() -> PgServer:
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) not found")
    root = Path(tempfile.mkdtemp(prefix="datafed-pg-"))
    kw: dict[str, Any] = {"cwd": root}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        kw["env"] = {"PATH": os.environ.get("PATH", ""), "HOME": str(root), "LC_ALL": "C.UTF-8"}
    admin_password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(admin_password + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, kw["user"], kw["group"])
    data = root / "data"
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            ADMIN,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        **kw,
    )
    pwfile.unlink()
    port = _free_port()
    log = (root / "server.log").open("wb")
    command = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(root),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "synchronous_commit=off",
    ]
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw
    )
    server = PgServer(root, port, admin_password, proc, command, kw)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.connect().close()
            return server
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.2)
