"""Loading TOML configuration files into pydantic models with one-line, field-naming errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from datafed.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "HostPort",
    "ResolvedPath",
    "Strict",
    "load_toml_model",
    "resolve_path",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)


def load_toml_model(path: Path, model: type[M]) -> M:
    """Read ``path`` as TOML and validate it as ``model``.

    Raises
    ------
    ConfigError
        With the file name and the dotted path of the first bad field, e.g.
        ``node.toml: datasets.0.policy.min_group_size: Input should be greater than 0``.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return validate_model(raw, model, source=str(path), base_dir=path.parent)


def validate_model(raw: dict[str, Any], model: type[M], *, source: str, base_dir: Path) -> M:
    """Validate a parsed mapping; relative paths in it resolve against ``base_dir``."""
    try:
        return model.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix says nothing
        raise ConfigError(f"{source}: {loc}: {msg}{extra}") from exc


def resolve_path(value: Path, base_dir: Path | None) -> Path:
    """Resolve ``value`` against ``base_dir`` unless it is absolute."""
    if value.is_absolute() or base_dir is None:
        return value
    return (base_dir / value).resolve()


def _resolve_in_context(value: Path, info: ValidationInfo) -> Path:
    ctx: dict[str, Any] = info.context or {}
    return resolve_path(value, ctx.get("base_dir"))


#: A path in a configuration file: relative paths resolve against the file's folder.
ResolvedPath = Annotated[Path, AfterValidator(_resolve_in_context)]
#: ``host:port`` of a server (port 0: any free port where the party listens).
HostPort = Annotated[str, Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")]


class Strict(BaseModel):
    """A configuration section: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")
