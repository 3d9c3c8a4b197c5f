"""Documentation of TOML configuration files, generated from their pydantic models.

The reference page (``docs/reference/config.md``, written by ``docs/generate.py``) and the
annotated ``node.toml`` of ``datafed-node init`` both come from here, so neither can drift
from the code: every key, its type, default and constraints are read from the model, and
its meaning from the model's own documentation -- ``Field(description=...)`` or, as Sphinx
autodoc reads them, ``#:`` comment lines right above the field. A field without either
makes generation fail (:class:`MissingDescription`), which is what the test of the
committed page catches.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["MissingDescription", "Section", "annotated_toml", "reference_markdown", "sections"]

_FIELD_LINE = re.compile(r"^ {4}([A-Za-z_]\w*)\s*:")


class MissingDescription(Exception):
    """A model field has neither a ``description`` nor a ``#:`` comment."""


@dataclass(frozen=True)
class Key:
    """One key of a TOML table."""

    name: str
    type: str
    default: str | None  # TOML text of the default; None: required
    constraints: str
    meaning: str


@dataclass(frozen=True)
class Section:
    """One TOML table (``[path]`` or ``[[path]]``) and its scalar keys."""

    path: str
    array: bool
    required: bool
    summary: str
    keys: tuple[Key, ...]

    @property
    def header(self) -> str:
        """``[path]`` or ``[[path]]`` (empty for the top level)."""
        if not self.path:
            return ""
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"


def _comments(model: type[BaseModel]) -> dict[str, str]:
    found: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            lines = textwrap.dedent(inspect.getsource(klass)).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines[1:]:
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
                continue
            match = _FIELD_LINE.match(line)
            if match and pending:
                found[match.group(1)] = " ".join(pending).replace("``", "`")
            pending = []
    return found


def _doc(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        tp, *extra = typing.get_args(tp)
        meta.extend(extra)
    return tp, meta


def _optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _type(tp: Any) -> str:
    tp, meta = _unwrap(tp)
    if any(getattr(getattr(m, "func", None), "__name__", "") == "check_identifier" for m in meta):
        return "identifier"
    inner = _optional(tp)
    if inner is not None:
        return _type(inner)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_type(args[0])} to {_type(args[1])}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _constraints(info: FieldInfo) -> str:
    parts = []
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    ops |= {"min_length": "at least", "max_length": "at most"}
    for m in info.metadata:
        for attr, sign in ops.items():
            value = getattr(m, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}" + (" item(s)" if "length" in attr else ""))
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return "; ".join(parts)


def toml_value(value: Any) -> str:
    """Render a Python default as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _model_of(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    tp, _ = _unwrap(tp)
    tp = _optional(tp) or tp
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        item, _ = _unwrap(item)
        return (
            (item, True)
            if isinstance(item, type) and issubclass(item, BaseModel)
            else (None, False)
        )
    return (tp, False) if isinstance(tp, type) and issubclass(tp, BaseModel) else (None, False)


def sections(
    model: type[BaseModel],
    path: str = "",
    *,
    array: bool = False,
    required: bool = True,
    extra: Mapping[str, type[BaseModel]] | None = None,
) -> Iterator[Section]:
    """Walk ``model`` (and ``extra`` top-level tables) as TOML tables, parents first.

    Raises
    ------
    MissingDescription
        If a field is undocumented.
    """
    comments = _comments(model)
    summary = _doc(model)
    if not summary:
        raise MissingDescription(f"{model.__module__}.{model.__name__} has no docstring")
    keys, children = [], []
    for name, info in model.model_fields.items():
        meaning = (info.description or "").replace("``", "`") or comments.get(name)
        sub, is_array = _model_of(info.annotation)
        child = f"{path}.{name}" if path else name
        if sub is not None:  # a table: its model's docstring documents it
            children.append((sub, child, is_array, info.is_required()))
            continue
        if not meaning:
            raise MissingDescription(f"{model.__module__}.{model.__name__}.{name} is undocumented")
        default = None
        if not info.is_required():
            value = info.get_default(call_default_factory=True)
            default = "unset" if value is None else toml_value(value)
        keys.append(Key(name, _type(info.annotation), default, _constraints(info), meaning))
    yield Section(path, array, required, summary, tuple(keys))
    for sub, child, is_array, req in children:
        yield from sections(sub, child, array=is_array, required=req)
    for name, sub in (extra or {}).items():
        yield from sections(sub, name, required=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown(title: str, intro: str, secs: list[Section]) -> str:
    """One Markdown section per TOML table: key, type, default, constraints, meaning."""
    out = [f"## {title}", "", intro, ""]
    for sec in secs:
        if sec.path:
            optional = "" if sec.required else " (optional)"
            out += [f"### `{sec.header}`{optional}", ""]
        out += [sec.summary, ""] if sec.summary else []
        if not sec.keys:
            continue
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for k in sec.keys:
            default = "**required**" if k.default is None else f"`{k.default}`"
            meaning = k.meaning + (f" ({k.constraints})" if k.constraints else "")
            out.append(f"| `{k.name}` | {_cell(k.type)} | {_cell(default)} | {_cell(meaning)} |")
        out.append("")
    return "\n".join(out)


def _wrap(text: str, prefix: str) -> list[str]:
    return textwrap.wrap(text, 92, initial_indent=prefix, subsequent_indent=prefix)


def annotated_toml(
    header: str,
    secs: list[Section],
    examples: Mapping[str, str],
    active: set[str],
) -> str:
    """Return a TOML file that documents every key.

    Required keys are set from ``examples``, the rest are commented out at their
    defaults; tables outside ``active`` are commented out whole.

    Raises
    ------
    KeyError
        If a required key of an active table has no example.
    """
    out = [*(f"# {line}".rstrip() for line in header.splitlines()), ""]
    for sec in secs:
        on = not sec.path or sec.path in active
        lead = "" if on else "# "
        if sec.path:
            out.append(f"{lead}{sec.header}")
        out += _wrap(sec.summary, "# ") if sec.summary else []
        for k in sec.keys:
            dotted = f"{sec.path}.{k.name}" if sec.path else k.name
            kind = "required" if k.default is None else f"default {k.default}"
            more = f"; {k.constraints}" if k.constraints else ""
            out += _wrap(f"{k.meaning} ({k.type}, {kind}{more})", "# ")
            if dotted in examples:
                out.append(f"{lead}{k.name} = {examples[dotted]}")
            elif k.default is None:
                if on:
                    raise KeyError(f"no example value for the required key {dotted}")
                out.append(f"# {k.name} = ...")
            else:
                value = f"<{k.type}>" if k.default == "unset" else k.default
                out.append(f"# {k.name} = {value}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
