"""fusion-train-compensation: train a CLDyN task compensation behind a frozen fusion checkpoint
for one frozen downstream detector (`fusion_training.cldyn`), from a YAML.

    fusion-train-compensation --config config/training/cldyn_real.yaml
    fusion-train-compensation --config ... --set fusion_checkpoint=runs/x/best.pt --out comp.pt

The node uses the result with ``fusion_task: detector`` and ``compensation: FILE``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fusion_perception.cli.common import run_cli
from fusion_training.cldyn import load_cldyn_config, train
from fusion_training.cli.train import add_set_arg, parse_set

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-train-compensation",
        description="Train a task compensation (CLDyN) for a frozen fusion network and consumer.",
    )
    parser.add_argument("--config", type=Path, required=True, help="compensation YAML")
    parser.add_argument("--out", help="compensation file to write (sets output)")
    parser.add_argument("--steps", type=int, help="optimizer steps (sets steps)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (sets device)")
    add_set_arg(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    overrides = parse_set(args.set)
    named = {"output": args.out, "steps": args.steps, "device": args.device}
    overrides.update({k: v for k, v in named.items() if v is not None})
    config = load_cldyn_config(args.config, overrides)
    try:
        path, steps = train(config)
    except FloatingPointError as error:
        print(f"fusion-train-compensation: error: {error}", file=sys.stderr)
        return 1
    last = steps[-1]
    log.info(
        "%d steps: consumer loss %.4f on the compensated image, %.4f on the plain one; %s",
        len(steps),
        last["task_compensated"],
        last["task_plain"],
        path,
    )
    return 0


def entry_point(argv: Sequence[str] | None = None) -> int:
    return run_cli("fusion-train-compensation", main, argv)


if __name__ == "__main__":
    sys.exit(entry_point())
