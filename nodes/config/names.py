"""What every section of ``node.toml`` shares: names, identifiers and resolved paths."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from datafed.pki.identity import PARTY_NAME_PATTERN
from datafed.query.spec import check_identifier

__all__ = ["Ident", "PartyName"]

#: A SQL identifier (dataset, table or column name), checked like the query model's.
Ident = Annotated[str, AfterValidator(check_identifier)]
#: A party's name: the CN of its certificate, qualified by its federation in a named
#: one (``suzhou:alice``; docs/federation.md).
PartyName = Annotated[str, Field(pattern=PARTY_NAME_PATTERN)]
