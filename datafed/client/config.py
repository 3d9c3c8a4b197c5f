"""The analyst's federation file (``fed.toml``).

Example::

    analyst = "alice"
    timeout_s = 30

    [modes.paillier]                 # each protection mode's own options
    bits = 3072

    [tls]
    ca = "pki/ca.crt"
    cert = "pki/analyst/alice.crt"
    key = "pki/analyst/alice.key"
    signing_key = "pki/analyst/alice.ed25519"

    [[nodes]]
    name = "water-north"
    address = "127.0.0.1:50051"

In a named federation every name is qualified (``analyst = "shanghai:alice"``,
``name = "suzhou:water-1"``) and ``partners`` lists the trust bundles of the partner
federations whose nodes this analyst calls (docs/federation.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datafed.config.load import ResolvedPath, load_toml_model
from datafed.fl.config import FlowerLink
from datafed.pki.identity import PARTY_NAME_PATTERN
from datafed.pki.tls import PartyFiles

__all__ = ["FederationConfig", "NodeEndpoint", "load_federation"]

_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
#: A party's name, qualified by its federation in a named one (``suzhou:alice``).
_PARTY = PARTY_NAME_PATTERN


class NodeEndpoint(BaseModel):
    """One agency node the analyst talks to."""

    model_config = ConfigDict(extra="forbid")

    #: The node's name, as in its certificate (qualified in a named federation).
    name: str = Field(pattern=_PARTY)
    #: The node's ``host:port``.
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _ADDRESS.match(v):
            raise ValueError(f"expected host:port, got {v!r}")
        return v


class FederationConfig(BaseModel):
    """Everything the analyst's client needs to reach the federation."""

    model_config = ConfigDict(extra="forbid")

    #: Your name, as in your certificate (requests are signed as it; qualified in a named
    #: federation: ``shanghai:alice``).
    analyst: str = Field(pattern=_PARTY)
    tls: PartyFiles
    #: Trust bundles of partner federations whose nodes you call (``datafed pki bundle``
    #: writes them; docs/federation.md).
    partners: list[ResolvedPath] = []
    #: The agency nodes queries fan out to (``[[nodes]]`` tables).
    nodes: list[NodeEndpoint] = Field(min_length=1)
    #: Agencies asked only for sign-off (not queried), e.g. a regulator's node.
    approvers: list[NodeEndpoint] = []
    #: Deadline of each request to a node, in seconds.
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: Fractional bits when protected modes encode decimals as integers.
    fixed_point_bits: int = Field(default=16, ge=0, le=32)
    #: Options of each protection mode, ``[modes.<name>]`` (see :mod:`datafed.modes`).
    modes: dict[str, dict[str, Any]] = {}
    #: Where the Flower SuperLink is, for ``datafed train`` (``[flower]``, docs/training.md).
    flower: FlowerLink | None = None

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from datafed.errors import ConfigError
        from datafed.modes import mode_class

        for name, options in v.items():
            try:
                mode_class(name).from_options(options)
            except (ValueError, ConfigError) as exc:
                raise ValueError(str(exc)) from None
        return v

    @property
    def paillier_bits(self) -> int:
        """The analyst's Paillier modulus size (``[modes.paillier] bits``), also for PSI."""
        from datafed.modes import PaillierMode

        return PaillierMode.Options.model_validate(self.modes.get("paillier", {})).bits  # type: ignore[attr-defined, no-any-return]

    @field_validator("nodes")
    @classmethod
    def _unique(cls, v: list[NodeEndpoint]) -> list[NodeEndpoint]:
        names = [n.name for n in v]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        return v


def load_federation(path: Path) -> FederationConfig:
    """Load and validate a federation file."""
    return load_toml_model(path, FederationConfig)
