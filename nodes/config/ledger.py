"""``[witness]`` and ``[publish]``: witnessing peer logs and having this node's log witnessed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from datafed.config.load import HostPort, ResolvedPath, Strict
from nodes.config.names import PartyName

__all__ = ["PublishSection", "PublishWitness", "WitnessSection"]


class WitnessSection(Strict):
    """``[witness]``: the peer nodes whose logs this node witnesses (their certificates)."""

    #: Certificates of the peer nodes whose logs this node witnesses.
    peers: list[ResolvedPath] = Field(min_length=1)


class PublishWitness(Strict):
    """One witness this node asks to cosign its checkpoints."""

    #: The witness's name (its certificate's CN).
    name: PartyName
    #: The witness's ``host:port``.
    address: HostPort
    #: The witness's certificate (its key verifies the cosignatures).
    cert: ResolvedPath
    #: The witness's certificate role.
    role: Literal["node", "witness"] = "node"


class PublishSection(Strict):
    """``[publish]``: the witnesses to ask and how often (seconds)."""

    #: Seconds between requests for cosignatures.
    interval_s: float = Field(default=30.0, gt=0, le=86_400)
    #: Deadline of each cosignature request, in seconds.
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    witnesses: list[PublishWitness] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PublishSection:
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("publish.witnesses: names must be unique")
        return self
