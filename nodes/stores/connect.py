"""Opening a dataset's database: URL, password, driver, read-only session (docs/stores.md).

The password of a database never has to be written in ``node.toml``: ``password_env``
names an environment variable and ``password_file`` a file that holds it (the first line,
surrounding whitespace removed).  Every error here is a one-line :class:`ConfigError` that
names the dataset and never the password.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from datafed.errors import ConfigError
from nodes.config import DatasetConfig

__all__ = ["EXTRAS", "missing_driver", "open_engine", "password"]

#: The pip extra that brings each engine's driver.
EXTRAS = {"postgresql": "postgres", "spark": "spark"}
_DRIVERS = {"postgresql": "psycopg (PostgreSQL driver)", "spark": "pyspark", "duckdb": "duckdb"}


def missing_driver(cfg: DatasetConfig, exc: BaseException) -> ConfigError:
    """The one-line error for an engine whose Python driver is not installed."""
    engine = cfg.engine_name
    what = _DRIVERS.get(engine, f"the driver for {engine!r}")
    extra = EXTRAS.get(engine)
    hint = f"; install the {extra!r} extra: pip install 'datafed[{extra}]'" if extra else ""
    detail = getattr(exc, "name", None) or str(exc).split("\n", 1)[0]
    return ConfigError(f"dataset {cfg.name!r}: {what} is not installed ({detail}){hint}")


def password(cfg: DatasetConfig) -> str | None:
    """The database password named by ``password_env`` or ``password_file``, if any."""
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if not value:
            raise ConfigError(
                f"dataset {cfg.name!r}: environment variable {cfg.password_env} "
                "(password_env) is not set"
            )
        return value
    if cfg.password_file is not None:
        try:
            lines = cfg.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"dataset {cfg.name!r}: password_file {cfg.password_file}: "
                f"{exc.strerror or 'cannot read'}"
            ) from exc
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"dataset {cfg.name!r}: password_file {cfg.password_file} is empty")
        return value
    return None


def open_engine(cfg: DatasetConfig) -> sa.Engine:
    """Create the dataset's SQLAlchemy engine, read-only where the engine allows it.

    SQLite opens the file with ``mode=ro``; DuckDB with ``read_only``; PostgreSQL sessions
    run with ``default_transaction_read_only`` (give the node a read-only role as well).
    """
    try:
        url = sa.engine.make_url(cfg.sqlalchemy_url())
    except ArgumentError as exc:
        raise ConfigError(f"dataset {cfg.name!r}: url is not a database URL") from exc
    secret = password(cfg)
    if secret is not None:
        url = url.set(password=secret)
    kwargs: dict[str, Any] = {}
    engine = cfg.engine_name
    if engine == "duckdb":
        if url.database and not os.path.exists(url.database):
            raise ConfigError(
                f"dataset {cfg.name!r}: {url.database}: file not found "
                f"(load it with: datafed-node import --dataset {cfg.name} FILE)"
            )
        kwargs["connect_args"] = {"read_only": True}
    elif engine == "postgresql":
        kwargs["connect_args"] = {
            "options": "-c default_transaction_read_only=on",
            "connect_timeout": 10,
        }
        kwargs["pool_pre_ping"] = True
    try:
        return sa.create_engine(url, **kwargs)
    except (ImportError, NoSuchModuleError) as exc:
        raise missing_driver(cfg, exc) from None
    except ArgumentError as exc:
        raise ConfigError(f"dataset {cfg.name!r}: {exc.args[0]}") from None
