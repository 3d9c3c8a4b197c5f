"""``datafed-node import``: CSV or Parquet into a node's embedded store, typed, all or nothing.

:mod:`nodes.importer.stage` reads and types a file in DuckDB and reports the first bad line;
:mod:`nodes.importer.load` writes the staged table into the store and the policy skeleton.
"""
