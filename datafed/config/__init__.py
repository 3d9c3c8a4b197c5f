"""TOML configuration files.

:mod:`datafed.config.load` reads them into pydantic models with one-line, field-naming
errors; :mod:`datafed.config.doc` generates their documentation (docs/reference/config.md).
"""
