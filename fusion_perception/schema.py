"""The YAML-to-dataclass loader of the model and training configs: one implementation, so both
read a file, apply dotted-key overrides and report a wrong key or value the same way
("<dotted.key> must be <type>, got <value>", "unknown config key ...")."""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
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


def read_yaml_mapping(path: str | Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """A YAML file holding a mapping; ``what`` names it in the errors ("model config")."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    with path.open(encoding="utf-8") as stream:
        try:
            data = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            raise error(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise error(f"{what} {path} must be a mapping (key: value), got {type(data).__name__}")
    return dict(data)


def _convert(value: Any, hint: Any) -> Any:
    """YAML value -> field value: lists become tuples, ints become floats where floats are due."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        return _convert(value, options[0]) if len(options) == 1 else value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_convert(v, item) for v in value)
    if hint is float:
        return float(value)
    if hint is dict:
        return copy.deepcopy(dict(value))
    return value


def build(cls: type, data: Any, error: type[ValueError], prefix: str = "") -> Any:
    """Dataclass ``cls`` (and its dataclass sections) from a mapping; unknown keys, missing
    required keys, wrong types and a section's own check raise ``error`` naming the dotted key."""
    if not isinstance(data, Mapping):
        raise error(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise error(f"unknown config key {prefix + str(unknown[0])!r}; known keys: {sorted(hints)}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise error(f"missing required config key {prefix + missing[0]!r}")
    kwargs = {}
    for key, value in data.items():
        hint, dotted = hints[key], prefix + key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, error, dotted + ".")
            continue
        if not type_ok(value, hint):
            raise error(f"{dotted} must be {describe_type(hint)}, got {value!r}")
        kwargs[key] = _convert(value, hint)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, error):
            raise
        raise qualified(prefix, exc, hints, error) from None


def qualified(
    prefix: str, exc: Exception, names: Any, error: type[ValueError] = ValueError
) -> ValueError:
    """A section's own error as ``error``, its leading field name made a dotted key when it is
    one of ``names``."""
    message = str(exc)
    if message.split(" ", 1)[0] in names:
        return error(prefix + message)
    return error(f"{prefix.rstrip('.') or 'config'}: {message}")


def apply_overrides(
    data: Mapping[str, Any], cls: type, overrides: Mapping[str, Any], error: type[ValueError]
) -> dict[str, Any]:
    """Copy of ``data`` with ``{"a.b.c": value}`` set; every key on the path must be in the
    schema of ``cls`` (free-form mappings such as a ``dict`` field accept new keys)."""
    out = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        node, section = out, cls
        for depth, part in enumerate(parts):
            key = ".".join(parts[: depth + 1])
            hints = typing.get_type_hints(section) if section is not None else None
            if hints is not None and part not in hints:
                raise error(f"unknown config key {key!r}; known keys: {sorted(hints)}")
            if depth == len(parts) - 1:
                node[part] = value
                break
            hint = hints[part] if hints is not None else None
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise error(f"{key} is not a mapping, cannot set {dotted!r}")
            node = child
            section = hint if dataclasses.is_dataclass(hint) else None
    return out
