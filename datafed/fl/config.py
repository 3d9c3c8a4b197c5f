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
``datafed train --superlink HOST:PORT`` joins a SuperLink without a ``[flower]`` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from datafed.config.load import resolve_path
from datafed.errors import ConfigError

if TYPE_CHECKING:
    from datafed.client.config import FederationConfig

__all__ = ["FlowerLink", "load_fl_federation"]


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


def load_fl_federation(
    path: Path, superlink: str | None = None
) -> tuple[FederationConfig, FlowerLink]:
    """Load ``fed.toml``: the federation (nodes, analyst identity) and its ``[flower]`` table.

    Parameters
    ----------
    path : Path
        The federation file.
    superlink : str, optional
        A SuperLink ``host:port`` that replaces ``[flower] superlink`` (the table may then
        be absent).

    Raises
    ------
    ConfigError
        If the file is missing or invalid, or has no ``[flower]`` table and no
        ``superlink`` is given.
    """
    from datafed.client.config import load_federation  # that module imports this one

    fed = load_federation(path)  # fed.toml is parsed once, [flower] with the rest
    link = fed.flower
    if superlink is not None:
        base = link.model_dump() if link is not None else {}
        link = FlowerLink.model_validate({**base, "superlink": superlink})
    if link is None:
        raise ConfigError(
            f"{path}: flower: a 'flower' table with the SuperLink address is required "
            "(or pass --superlink HOST:PORT)"
        )
    return fed, link
