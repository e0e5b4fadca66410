"""What every console script shares: one way to report a user error and exit non-zero."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fusion_perception.backends import BACKEND_CHOICES
from fusion_perception.checkpoint import CheckpointError
from fusion_perception.image_codec import ImageEncodingError

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
