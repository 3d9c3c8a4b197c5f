"""Copying a domain dataclass to its protobuf message and back, field by field, by name.

Most domain types mirror a message: the same fields under the same names (a request
header, a job statement, a training spec, a dataset's access terms). A conversion names
only what differs -- a renamed field, a conversion, a nested message -- and
:func:`to_message` / :func:`from_message` copy the rest by name, so no field list is
written twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from google.protobuf.message import Message

__all__ = ["from_message", "to_message"]

M = TypeVar("M", bound=Message)
D = TypeVar("D")


def to_message(message_type: type[M], obj: Any, /, **fields: Any) -> M:
    """A ``message_type`` holding the dataclass ``obj``'s fields that it also has.

    ``fields`` set the message's other fields and replace copied ones (a conversion,
    a nested message; ``None`` leaves a field unset).
    """
    names = message_type.DESCRIPTOR.fields_by_name
    copied = {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.name in names and f.name not in fields
    }
    return message_type(**copied, **fields)


def from_message(cls: type[D], msg: Message, /, **fields: Any) -> D:
    """A ``cls`` (a dataclass) built from ``msg``'s fields of the same names.

    Repeated fields become tuples. ``fields`` give ``cls``'s other fields and replace
    copied ones; a field of ``cls`` that is in neither keeps its default.
    """
    wire = msg.DESCRIPTOR.fields_by_name
    copied: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.init and f.name in wire and f.name not in fields:
            value = getattr(msg, f.name)
            copied[f.name] = tuple(value) if wire[f.name].is_repeated else value
    return cls(**copied, **fields)
