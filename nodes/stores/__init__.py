"""The node's data stores: one :class:`DatasetStore` per dataset, on four engines.

:class:`DataStore` is what the node uses: all datasets of one node behind one small
surface (``names``, ``columns``, ``aggregate``, ``read_rows``, ``close``).
Each dataset is opened by the engine its ``node.toml`` entry names (docs/stores.md):

========== ==================================== ===================================
engine     implementation                       source in node.toml
========== ==================================== ===================================
sqlite     :mod:`nodes.stores.sql` (Core)       ``path = "x.sqlite"``
duckdb     :mod:`nodes.stores.sql` (Core)       ``path = "x.duckdb"`` (the default)
postgresql :mod:`nodes.stores.sql` (Core)       ``url = "postgresql://..."``
spark      :mod:`nodes.stores.spark` (DataFrame) ``[datasets.spark]``
========== ==================================== ===================================

Opening a store checks every allowed column's stored values against its type and the
policy's columns, group domains and DP bounds against the schema (:mod:`.checks`); a
dataset that does not conform is refused with a :class:`ConfigError` naming the column
and an example value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datafed.errors import ConfigError
from datafed.query.components import Component
from datafed.query.spec import QuerySpec, Scalar
from nodes.config import DatasetConfig
from nodes.errors import InvalidRequest, NotFound
from nodes.stores.base import Column, DatasetStore, GroupRow, check_spec
from nodes.stores.types import value_fits

__all__ = ["Column", "DataStore", "DatasetStore", "GroupRow", "open_dataset"]


def open_dataset(cfg: DatasetConfig) -> DatasetStore:
    """Open one dataset with the engine its configuration names."""
    if cfg.engine_name == "spark":
        from nodes.stores.spark import SparkDataset

        return SparkDataset(cfg)
    from nodes.stores.sql import SqlDataset

    return SqlDataset(cfg)


class DataStore:
    """All datasets of one node.

    Parameters
    ----------
    datasets
        The node's datasets.
    check
        Refuse datasets that do not conform (see :func:`nodes.stores.checks.problems`).
        ``check-config`` opens with ``check=False`` and lists every problem instead.
    """

    def __init__(self, datasets: Sequence[DatasetConfig], *, check: bool = True) -> None:
        self._datasets: dict[str, DatasetStore] = {}
        self._configs = {d.name: d for d in datasets}
        try:
            for d in datasets:
                self._datasets[d.name] = open_dataset(d)
            if check:
                from nodes.stores.checks import problems

                found = [p for d in datasets for p in problems(d, self._datasets[d.name])]
                if found:
                    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
                    raise ConfigError(found[0] + more)
        except BaseException:
            self.close()
            raise

    def names(self) -> list[str]:
        """Dataset names, sorted."""
        return sorted(self._datasets)

    def _get(self, dataset: str) -> DatasetStore:
        ds = self._datasets.get(dataset)
        if ds is None:
            raise NotFound(f"unknown dataset {dataset!r}")
        return ds

    def dataset(self, name: str) -> DatasetStore:
        """The store of one dataset; raise :class:`NotFound` for an unknown one."""
        return self._get(name)

    def columns(self, dataset: str) -> tuple[str, ...]:
        """The columns a dataset exposes; raise :class:`NotFound` for an unknown dataset."""
        return tuple(self._get(dataset).columns)

    def column_types(self, dataset: str) -> dict[str, str]:
        """Each exposed column's type: ``integer``, ``real``, ``text`` or ``boolean``."""
        return {n: c.type for n, c in self._get(dataset).columns.items()}

    def engine(self, dataset: str) -> str:
        """The engine a dataset lives in (``sqlite``, ``duckdb``, ``postgresql``, ``spark``)."""
        return self._get(dataset).engine_name

    def check(self, spec: QuerySpec) -> None:
        """Refuse (InvalidRequest/NotFound) a query the dataset cannot run; reads no data.

        Servicers may call this before recording an approval; :meth:`aggregate` calls it too.
        """
        ds = self._get(spec.dataset)
        check_spec(spec.dataset, ds.columns, spec)

    def typed_keys(
        self, spec: QuerySpec, keys: Sequence[tuple[Scalar | None, ...]]
    ) -> list[tuple[Scalar | None, ...]]:
        """Check that group-domain keys from a request have the GROUP BY columns' types.

        A key of the wrong type would match no group and silently count as zero; it is
        refused instead (an ``int`` is accepted for a ``real`` column, as ``float``).
        """
        types = [self._get(spec.dataset).columns[g].type for g in spec.group_by]
        out = []
        for key in keys:
            if len(key) != len(types):
                raise InvalidRequest("group domain keys do not match GROUP BY")
            for col, t, v in zip(spec.group_by, types, key, strict=True):
                if v is not None and not value_fits(t, v):
                    raise InvalidRequest(f"group domain value {v!r} is not a {t} ({col!r})")
            out.append(
                tuple(
                    float(v) if t == "real" and v is not None else v
                    for t, v in zip(types, key, strict=True)
                )  # type: ignore[arg-type]
            )
        return out

    def aggregate(
        self,
        spec: QuerySpec,
        comps: Sequence[Component],
        fixed_point_bits: int,
        bounds: Mapping[str, tuple[float, float]] | None = None,
    ) -> list[GroupRow]:
        """Run ``spec`` and return one :class:`GroupRow` per group, sorted by key (blocking).

        With ``bounds``, summed values are clamped to them (for differential privacy).
        """
        return self._get(spec.dataset).aggregate(spec, comps, fixed_point_bits, bounds)

    def read_rows(self, dataset: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Read the given columns of every row (for approved training jobs only)."""
        return self._get(dataset).read_rows(columns)

    def close(self) -> None:
        """Release every dataset's connections."""
        for ds in self._datasets.values():
            ds.close()
        self._datasets = {}
