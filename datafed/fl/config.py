"""Where the analyst's Flower SuperLink is: the ``[flower]`` table of ``fed.toml``.

Example (added to the federation file of :mod:`datafed.client.config`)::

    [flower]
    superlink = "127.0.0.1:9093"     # the SuperLink's Control API (HTTPS)
    root_certificates = "pki/ca.crt" # default: the federation CA from [tls]
    connect_timeout_s = 600          # how long `train` waits for the whole run

The SuperLink's TLS certificate is issued by the federation CA like every other party's,
so the analyst trusts exactly the CA it already trusts. ``insecure = true`` exists for
local experiments only and is reported loudly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from datafed.config import resolve_path, validate_model
from datafed.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from datafed.client.config import FederationConfig

__all__ = ["FlowerLink", "load_fl_federation"]


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    ctx: dict[str, Any] = info.context or {}
    return None if value is None else resolve_path(value, ctx.get("base_dir"))


class FlowerLink(BaseModel):
    """How the analyst reaches the Flower SuperLink."""

    model_config = ConfigDict(extra="forbid")

    superlink: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
    root_certificates: Annotated[Path | None, AfterValidator(_resolve)] = None
    insecure: bool = False
    connect_timeout_s: float = Field(default=600.0, gt=0, le=86400)


def load_fl_federation(path: Path) -> tuple[FederationConfig, FlowerLink]:
    """Load ``fed.toml``: the federation (nodes, analyst identity) and its ``[flower]`` table.

    Raises
    ------
    ConfigError
        If the file is missing or invalid, or has no ``[flower]`` table.
    """
    from datafed.client.config import FederationConfig  # that module may import this one

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    flower = raw.get("flower")
    if not isinstance(flower, dict):
        raise ConfigError(
            f"{path}: flower: a 'flower' table with the SuperLink address is required"
        )
    if "flower" not in FederationConfig.model_fields:
        raw = {k: v for k, v in raw.items() if k != "flower"}
    fed = validate_model(raw, FederationConfig, source=str(path), base_dir=path.parent)
    link = validate_model(flower, FlowerLink, source=f"{path} (flower table)", base_dir=path.parent)
    return fed, link
