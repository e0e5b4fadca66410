"""Settings declared once, as dataclass fields, and used as node parameters, CLI flags and
YAML keys.

A field made with :func:`setting` carries its help text and constraint (a range or choices) in
its metadata. The node turns a settings class into ``<prefix>.<field>`` parameters
(`fusion_perception.ros.params`), the CLIs into ``--<field>`` flags (:func:`add_flags`), and
the class validates itself with :func:`check_fields`, so a default or a range is written in one
place only.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Iterable[str] = (),
    flag: str | None = None,
) -> Any:
    """A dataclass field with its help text, range or choices, and (when the field name alone
    would be ambiguous on a command line) its CLI flag."""
    metadata = {"help": help, "low": low, "high": high, "choices": tuple(choices), "flag": flag}
    return field(default=default, metadata=metadata)


def check_fields(settings: Any, prefix: str) -> None:
    """Raise ValueError naming ``<prefix>.<field>`` for a value outside its range or choices
    (None is allowed where the default is None-able: it means "off")."""
    for spec in dataclasses.fields(settings):
        value = getattr(settings, spec.name)
        name = f"{prefix}.{spec.name}"
        meta = spec.metadata
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{name}: {value!r} is not one of {list(meta['choices'])}")
        if not meta["choices"] and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"{name}: must be a number, got {value!r}")
        low, high = meta["low"], meta["high"]
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise ValueError(f"{name}: {value} is outside {bounds}")


def flag_name(spec: dataclasses.Field) -> str:
    return spec.metadata["flag"] or spec.name.replace("_", "-")


def add_flags(group: Any, cls: type, prefix: str, defaults: Any = None) -> None:
    """One ``--flag`` per field of ``cls``; unset flags parse as None, so callers can tell a
    value given on the command line from the default. ``defaults`` (an instance) is what the
    help shows as the default, when the tool's differ from the class's."""
    for spec in dataclasses.fields(cls):
        meta = spec.metadata
        default = spec.default if defaults is None else getattr(defaults, spec.name)
        kind = type(spec.default) if spec.default is not None else float
        limits = ""
        if meta["low"] is not None and meta["high"] is not None:
            limits = f", [{meta['low']:g}, {meta['high']:g}]"
        group.add_argument(
            f"--{flag_name(spec)}",
            dest=spec.name,
            type=None if meta["choices"] else kind,
            choices=meta["choices"] or None,
            default=None,
            help=f"{meta['help']} ({prefix}.{spec.name}; default "
            f"{'off' if default is None else default}{limits})",
        )


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (see :func:`add_flags`)."""
    values = {spec.name: getattr(args, spec.name, None) for spec in dataclasses.fields(cls)}
    return {name: value for name, value in values.items() if value is not None}


def replace_from_flags(base: Any, args: argparse.Namespace, prefix: str) -> Any:
    """``base`` with the flags given on the command line; an invalid value raises ValueError
    naming its flag."""
    try:
        return dataclasses.replace(base, **given_flags(args, type(base)))
    except ValueError as exc:
        text = str(exc)
        for spec in dataclasses.fields(base):
            key = f"{prefix}.{spec.name}:"
            if text.startswith(key):
                raise ValueError(f"--{flag_name(spec)}:{text[len(key) :]}") from None
        raise


def from_prefixed(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """``cls`` from a flat ``{"<prefix>.<field>": value}`` mapping (the node's parameters)."""
    return cls(**{spec.name: values[f"{prefix}.{spec.name}"] for spec in dataclasses.fields(cls)})
