"""The node's data store (kept for its importers): see :mod:`nodes.stores`.

``DataStore`` and ``GroupRow`` moved to the :mod:`nodes.stores` package, which holds one
implementation per engine (SQLite, DuckDB and PostgreSQL through SQLAlchemy Core; Apache
Spark through DataFrames) behind one protocol, :class:`nodes.stores.DatasetStore`.
"""

from __future__ import annotations

from nodes.stores import DatasetStore, DataStore, GroupRow

__all__ = ["DataStore", "DatasetStore", "GroupRow"]
