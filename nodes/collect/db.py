"""The two databases a collection task can live in: a SQLite file or a PostgreSQL schema.

One process (the default) keeps each task in ``state_dir/collect/<task>.sqlite``
(:class:`SqliteDb`: WAL, ``synchronous=FULL``, one writer at a time behind a lock; reads
on a connection of their own per thread, which WAL lets run beside the writer, so a
read never waits for another step's commit and its fsync).
Several processes of one aggregator -- its ``serve`` process, upload front ends and
aggregation workers (``docs/collect.md``) -- share a PostgreSQL database instead
(:class:`PgDb`): one schema per task, one connection per thread, every step one
transaction, row locks where two processes could race, and the database's clock for
leases and for the wall-clock rule of closing windows, so a worker whose own clock is
skewed decides nothing by it.

The store (:mod:`nodes.collect.windows`, :mod:`nodes.collect.storage`) writes its SQL
once, in SQLite's spelling with ``?`` placeholders; :meth:`PgDb.sql` turns it into
PostgreSQL's. A connection lost (the database restarted) raises :class:`StoreUnavailable`;
callers retry the whole step, and every step is written so that doing it again is safe.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from nodes.errors import Unavailable

__all__ = ["Cursor", "Db", "PgDb", "SqliteDb", "StoreUnavailable", "open_db"]

log = logging.getLogger("datafed.node")

#: Seconds :meth:`SqliteDb.close` / :meth:`PgDb.close` wait for transactions still running
#: on other threads before closing their connections.
CLOSE_WAIT_S = 30.0


class StoreUnavailable(Unavailable):
    """The task's database cannot be reached now (retry the step)."""


class _InUse:
    """Transactions in progress: ``close`` never pulls a connection from under one.

    A step runs on a worker thread (``asyncio.to_thread``); cancelling the coroutine that
    awaits it does not stop the thread, so a node stopping can reach ``close`` while a
    step is still inside SQLite -- and closing a SQLite connection another thread is
    using crashes the process. Once closing, a new transaction raises
    :class:`StoreUnavailable` (the step is retried after the restart, as after a crash);
    ``close`` waits for those already running.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closing = False

    @contextmanager
    def use(self) -> Iterator[None]:
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the collection database is closed (the node is stopping)")
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    def drain(self, where: str, timeout_s: float = CLOSE_WAIT_S) -> bool:
        """Refuse new transactions; wait for running ones. ``False``: some still run."""
        with self._cond:
            self._closing = True
            if self._cond.wait_for(lambda: self._active == 0, timeout_s):
                return True
        log.warning(
            "collect: %s still in use after %.0f s; its connections are left to the process exit",
            where,
            timeout_s,
        )
        return False


class Cursor(Protocol):
    """What a transaction hands the store: execute, executemany, fetch."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the result can ``fetchone``/``fetchall``."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        """Run one statement per row."""
        ...


class Db(Protocol):
    """A task's database (see module docs)."""

    dialect: str

    def tx(self) -> Any:
        """``with db.tx() as cur``: one transaction, committed or rolled back."""
        ...

    def read(self) -> Any:
        """``with db.read() as cur``: a read-only transaction (a consistent snapshot)."""
        ...

    def clock_ms(self) -> int:
        """The database's clock in milliseconds, outside any transaction."""
        ...

    def now_ms(self, cur: Cursor) -> int:
        """The database's clock in milliseconds (the one clock every process shares)."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...


class SqliteDb:
    """One SQLite file, one writer at a time (one process)."""

    dialect = "sqlite"

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(schema)
        self._lock = threading.Lock()
        self._path = path
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._in_use = _InUse()
        self.where = str(path)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One locked transaction (``BEGIN IMMEDIATE``), committed durably or rolled back."""
        with self._in_use.use(), self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on this thread's read connection; no lock, no fsync.

        WAL gives it the last committed state and lets it run while a step writes (the
        writer's lock is held across its commit's fsync; a read behind it would wait).
        """
        with self._in_use.use():
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA query_only=1")
                self._local.conn = conn
                with self._guard:  # not the writer's lock: a read never waits for a commit
                    self._readers.append(conn)
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def now_ms(self, cur: Cursor) -> int:
        """This process's clock (one process decides everything)."""
        return int(time.time() * 1000)

    def clock_ms(self) -> int:
        """This process's clock; no transaction (one process decides everything)."""
        return int(time.time() * 1000)

    def close(self) -> None:
        """Close the file, once no thread is inside a transaction (see :class:`_InUse`)."""
        if not self._in_use.drain(self.where):
            return
        with self._guard:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            self._db.close()


_PG_TYPES = (
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\s+WITHOUT ROWID"), ""),
)


class PgDb:
    """One PostgreSQL schema per task, shared by every process of the aggregator."""

    dialect = "postgresql"

    def __init__(self, url: str, password: str | None, schema_name: str, schema: str) -> None:
        self._url, self._password = url, password
        self._schema = schema_name
        self._local = threading.local()
        self._all: list[Any] = []
        self._guard = threading.Lock()
        self._in_use = _InUse()
        self.where = f"{re.sub(r'//[^@/]*@', '//', url)} schema {schema_name}"
        with self.tx() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (schema_name,))
            for stmt in schema.split(";"):
                if stmt.strip():
                    cur.execute(self.ddl(stmt))

    @staticmethod
    def sql(text: str) -> str:
        """SQLite spelling to PostgreSQL's: placeholders, ``max(a, b)`` (aggregates: ``MAX``)."""
        return text.replace("?", "%s").replace("max(", "GREATEST(")

    @staticmethod
    def ddl(stmt: str) -> str:
        """A CREATE statement in PostgreSQL's types."""
        for pattern, repl in _PG_TYPES:
            stmt = pattern.sub(repl, stmt)
        return stmt

    def _conn(self) -> Any:
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = psycopg.connect(
                self._url,
                password=self._password,
                autocommit=True,
                options=f"-c search_path={self._schema}",
                connect_timeout=5,
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"collection database unreachable: {exc}") from exc
        self._local.conn = conn
        with self._guard:
            self._all.append(conn)
        return conn

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        """One transaction on this thread's connection; a lost connection is dropped."""
        import psycopg

        with self._in_use.use():
            conn = self._conn()
            try:
                with conn.transaction(), conn.cursor() as raw:
                    yield _PgCursor(raw)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                raise StoreUnavailable(f"collection database unavailable: {exc}") from exc

    def read(self) -> Any:
        """A transaction for reading (the same as :meth:`tx`: MVCC never waits on writers)."""
        return self.tx()

    def now_ms(self, cur: Cursor) -> int:
        """The server's clock (``clock_timestamp()``), in milliseconds."""
        row = cur.execute("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
        return int(row.fetchone()[0])

    def clock_ms(self) -> int:
        """The server's clock, in a transaction of its own."""
        with self.tx() as cur:
            return self.now_ms(cur)

    def close(self) -> None:
        """Close every connection this object opened, once none is in a transaction."""
        if not self._in_use.drain(self.where):
            return
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()


class _PgCursor:
    """A psycopg cursor that takes the store's SQLite spelling."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._raw.execute(PgDb.sql(sql), tuple(params))
        return self._raw

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        if rows:
            self._raw.executemany(PgDb.sql(sql), [tuple(r) for r in rows])
        return self._raw


def open_db(
    url: str, password_env: str, state_dir: Path, task: str, schema: str
) -> SqliteDb | PgDb:
    """The task's database: PostgreSQL if ``url`` is set, else its SQLite file."""
    if not url:
        return SqliteDb(state_dir / "collect" / f"{task}.sqlite", schema)
    password = os.environ.get(password_env) if password_env else None
    name = "collect_" + re.sub(r"[^a-z0-9_]", "_", task.lower())
    return PgDb(url, password, name, schema)
