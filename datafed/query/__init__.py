"""The query model: spec, SQL front end, components, protection modes and results."""

from datafed.query.result import LedgerHeadInfo, QueryResult
from datafed.query.spec import QuerySpec
from datafed.query.sql import parse_sql

__all__ = ["LedgerHeadInfo", "QueryResult", "QuerySpec", "parse_sql"]
