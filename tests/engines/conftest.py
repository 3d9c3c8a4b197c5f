"""Session-wide engines for the engine tests: one PostgreSQL server, one Spark session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.engines.pg import PgServer, start_pg

PG_PASSWORD_ENV = "DATAFED_TEST_PG_PASSWORD"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A real PostgreSQL server on a loopback port, stopped after the session."""
    try:
        server = start_pg()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: .ci/run installs postgresql")
        pytest.skip(f"{exc}; `make setup` installs postgresql")
    os.environ[PG_PASSWORD_ENV] = "reader-pw"
    try:
        yield server
    finally:
        os.environ.pop(PG_PASSWORD_ENV, None)
        server.stop()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The process's Spark session on local[2], shared by every Spark dataset of the tests."""
    from nodes.stores.spark import acquire_session, release_session

    session = acquire_session("local[2]", {})
    try:
        yield session
    finally:
        release_session()
