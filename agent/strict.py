"""JSON read back into the agent's dataclasses, strictly: a field unknown or missing, or of another type, is
refused by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: JSON as `json.loads` returns it.
JsonValue = object

_KINDS = {str: "text", int: "a whole number", bool: "true or false"}


class InputError(ValueError):
    """Data that does not read as the type it is meant to be."""


def read(cls: type[T], data: JsonValue, what: str) -> T:
    """`data` as a `cls`, each field of its declared type (lists as tuples); `InputError` otherwise."""
    if not isinstance(data, dict):
        raise InputError(f"{what} is not a JSON object")
    names = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name not in data]
    if unknown or missing:
        parts = ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise InputError(f"{what} does not read as JSON with {', '.join(names)}: {'; '.join(parts)}")
    hints = typing.get_type_hints(cls)
    values = {name: _typed(hints[name], data[name], what, name) for name in names}
    return cast("Callable[..., T]", cls)(**values)


def _typed(hint: object, value: JsonValue, what: str, name: str) -> JsonValue:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and value is None and type(None) in args:
        return None
    if origin in (types.UnionType, typing.Union):
        (hint,) = (arg for arg in args if arg is not type(None))
        return _typed(hint, value, what, name)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return read(hint, value, f"{what}: {name}")
    if origin is tuple and isinstance(value, list):
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        if len(items) == len(value):
            return tuple(_typed(item, part, what, name) for item, part in zip(items, value, strict=True))
    elif isinstance(hint, type) and hint in _KINDS and type(value) is hint:
        return value
    kind = "a list of that shape" if origin is tuple else _KINDS.get(cast("type", hint), str(hint))
    raise InputError(f"{what}: {name} = {value!r} is not {kind}")
