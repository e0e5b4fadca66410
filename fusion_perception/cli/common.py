"""What every console script shares: one way to report a user error and exit non-zero, and the
flags of the settings several tools take (backend, thermal normalization)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fusion_perception.backends import BACKEND_CHOICES
from fusion_perception.checkpoint import CheckpointError
from fusion_perception.image_codec import ImageEncodingError
from fusion_perception.settings import add_flags, flag_name, given_flags, replace_from_flags
from fusion_perception.thermal import ThermalConfig, ThermalNormalizer

USER_ERRORS = (CheckpointError, ImageEncodingError, ValueError, FileNotFoundError, KeyError)


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv=None) -> int:
    """Run `main`; a user error prints `prog: error: ...` and returns 2 instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format=f"{prog}: %(message)s")
    try:
        return main(argv)
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def add_backend_args(parser: argparse.ArgumentParser, default: str) -> None:
    """--backend and --artifact, the same in every tool that runs a checkpoint."""
    group = parser.add_argument_group("inference backend")
    group.add_argument(
        "--backend",
        default=default,
        choices=BACKEND_CHOICES,
        help="who runs the forward pass; auto = the fastest installed for the device (CUDA: "
        "tensorrt, else torch; CPU: openvino, onnxruntime, torch) (default: %(default)s)",
    )
    group.add_argument(
        "--artifact",
        type=Path,
        help="file exported for --backend by fusion-export (.onnx, .xml, .engine); default: "
        "export the checkpoint on first use into $FUSION_PERCEPTION_CACHE (else "
        "~/.cache/fusion_perception) and reuse it; checked against the checkpoint either way",
    )


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' -> (640, 512)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected WIDTHxHEIGHT such as 640x512, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--size: {text!r} must be positive")
    return width, height


def add_thermal_args(parser: argparse.ArgumentParser) -> None:
    """--normalization SCHEME and its parameters: the node's thermal.* parameters as flags."""
    group = parser.add_argument_group("thermal normalization (the node's thermal.* parameters)")
    add_flags(group, ThermalConfig, "thermal")


def thermal_from_args(args: argparse.Namespace) -> ThermalConfig | None:
    """The thermal settings the flags describe; None without --normalization (or with
    ``checkpoint``): the caller then uses the checkpoint's or the dataset's scheme. A flag of
    another scheme than the one chosen is an error, not silently ignored."""
    given = given_flags(args, ThermalConfig)
    scheme = given.pop("normalization", "checkpoint")
    flags = {f.name: f"--{flag_name(f)}" for f in dataclasses.fields(ThermalConfig)}
    if scheme == "checkpoint":
        if given:
            raise ValueError(
                f"{flags[next(iter(given))]}: needs --normalization to say which scheme it "
                "belongs to"
            )
        return None
    for name in given:
        if name not in ThermalConfig.SCHEME_FIELDS[scheme]:
            owner = next(s for s, f in ThermalConfig.SCHEME_FIELDS.items() if name in f)
            raise ValueError(f"{flags[name]}: applies to --normalization {owner}, not {scheme}")
    if scheme == "fixed_range" and not {"range_lo", "range_hi"} <= set(given):
        raise ValueError("--normalization fixed_range: needs --range-lo and --range-hi")
    return replace_from_flags(ThermalConfig(), args, "thermal")


def normalizer_from_args(args: argparse.Namespace) -> ThermalNormalizer | None:
    """The normalizer the flags describe, or None (see `thermal_from_args`)."""
    config = thermal_from_args(args)
    return None if config is None else config.normalizer()
