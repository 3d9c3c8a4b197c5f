"""Option groups: options that several commands declare once and take as one object.

Typer reads a command's options from its signature.  A parameter whose default is an
:class:`OptionGroup` stands for the group's options: :func:`with_groups` puts them in its
place in the signature typer sees (and the group's ``last`` options at the end of it), so
``--help`` lists them as if each command spelled them out, and calls the command with the
group's object, ``make(**options)``, in that parameter.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OptionGroup", "option", "with_groups"]


def option(name: str, annotation: Any, info: Any) -> inspect.Parameter:
    """The parameter ``name: annotation = info`` (``info``: a ``typer.Option`` or ``Argument``)."""
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=annotation
    )


@dataclass(frozen=True)
class OptionGroup:
    """Options (``params`` in place, ``last`` at the end) that a command gets as ``make(...)``."""

    make: Callable[..., Any]
    params: tuple[inspect.Parameter, ...]
    last: tuple[inspect.Parameter, ...] = ()


def with_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Return ``command`` with each :class:`OptionGroup` parameter spelled out for typer."""
    hints = typing.get_type_hints(command)
    groups: dict[str, OptionGroup] = {}
    params: list[inspect.Parameter] = []
    last: list[inspect.Parameter] = []
    for p in inspect.signature(command).parameters.values():
        if isinstance(p.default, OptionGroup):
            groups[p.name] = p.default
            params += p.default.params
            last += p.default.last
        else:
            params.append(p.replace(annotation=hints[p.name]))

    @functools.wraps(command, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    def run(**kwargs: Any) -> None:
        for name, group in groups.items():
            mine = {p.name: kwargs.pop(p.name) for p in (*group.params, *group.last)}
            kwargs[name] = group.make(**mine)
        command(**kwargs)

    signature = inspect.Signature([*params, *last])
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return run
