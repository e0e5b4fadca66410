"""What every console script shares: one way to report a user error and exit non-zero."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

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


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' -> (640, 512)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected WIDTHxHEIGHT such as 640x512, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--size: {text!r} must be positive")
    return width, height
