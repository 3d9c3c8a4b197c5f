"""Where the analyst's Flower SuperLink is: the ``[flower]`` table of ``fed.toml``.

Example (added to the federation file of :mod:`datafed.client.config`)::

    [flower]
    superlink = "127.0.0.1:9093"     # the SuperLink's HTTPS API (flwr run, SuperNodes)
    root_certificates = "pki/ca.crt" # default: the federation CA from [tls]
    connect_timeout_s = 600          # how long `train` waits for the whole run
    # only for `datafed train --start-superlink` (the analyst runs the SuperLink):
    superlink_cert = "pki/superlink/superlink.crt"
    superlink_key = "pki/superlink/superlink.key"

The SuperLink's TLS certificate is issued by the federation CA like every other party's
(role ``superlink``), so the analyst trusts exactly the CA it already trusts.
``insecure = true`` exists for local experiments only and is reported loudly.
``datafed train --superlink HOST:PORT`` joins a SuperLink without a ``[flower]`` table
(:func:`datafed.fl.training.load_fl_federation` reads the file with the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from datafed.config.load import resolve_path

__all__ = ["FlowerLink"]


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    ctx: dict[str, Any] = info.context or {}
    return None if value is None else resolve_path(value, ctx.get("base_dir"))


class FlowerLink(BaseModel):
    """How the analyst reaches the Flower SuperLink."""

    model_config = ConfigDict(extra="forbid")

    #: The SuperLink's ``host:port`` (Flower's HTTPS API: ``flwr run`` and SuperNodes).
    superlink: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    #: CA that verifies the SuperLink's certificate; default: ``tls.ca``.
    root_certificates: Annotated[Path | None, AfterValidator(_resolve)] = None
    #: Talk to the SuperLink without TLS (local experiments only; loudly reported).
    insecure: bool = False
    #: How long ``datafed train`` waits for the whole run, in seconds.
    connect_timeout_s: float = Field(default=600.0, gt=0, le=86400)
    #: Certificate (role ``superlink``) of the SuperLink ``train --start-superlink`` runs.
    superlink_cert: Annotated[Path | None, AfterValidator(_resolve)] = None
    #: Its TLS key.
    superlink_key: Annotated[Path | None, AfterValidator(_resolve)] = None
