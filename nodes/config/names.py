"""What every section of ``node.toml`` shares: names, identifiers and resolved paths."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from datafed.query.spec import check_identifier

__all__ = ["Ident", "PartyName"]

#: A SQL identifier (dataset, table or column name), checked like the query model's.
Ident = Annotated[str, AfterValidator(check_identifier)]
#: A party's name: the CN of its certificate.
PartyName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
