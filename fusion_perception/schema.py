"""Type checks for the dataclass-based YAML configs (model and training): one implementation, so both
report a wrong value the same way ("<dotted.key> must be <type>, got <value>")."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union


def type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML-loaded value fits a field annotation (bools are never numbers)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(type_ok(value, option) for option in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, (list, tuple)) and all(type_ok(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is dict:
        return isinstance(value, Mapping)
    return isinstance(value, hint)


def describe_type(hint: Any) -> str:
    """A field annotation in words, for error messages."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {describe_type(typing.get_args(hint)[0])}"
    if hint is dict:
        return "a mapping"
    return "null" if hint is type(None) else hint.__name__


def to_plain(value: Any) -> Any:
    """Dataclass tree -> plain dicts and lists (YAML- and checkpoint-friendly)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def json_safe(value: Any) -> Any:
    """Strict-JSON values: NaN/inf -> null, numpy/torch scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
