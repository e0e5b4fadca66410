"""fusion-train: train UniFusOD end to end (fusion + detection, UnityGrad) from a training YAML.

    fusion-train --config config/training/synthetic_nano.yaml --out runs/nano
    fusion-train --config config/training/m3fd_small.yaml --data /data/M3FD --out runs/m3fd
    fusion-train --config ... --out runs/m3fd --resume                  # continue exactly
    fusion-train --config ... --set mtl.method=weighted_sum --set optimizer.lr=2e-4
    torchrun --nproc_per_node 4 -m fusion_training.cli.train --config ...   # DDP

The YAML sets every default, the options override it, and the resolved config is written to the
output directory (config.yaml) and into every checkpoint's provenance.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fusion_perception.cli.common import run_cli
from fusion_training.config import load_training_config
from fusion_training.trainer import Trainer

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-train",
        description="Train UniFusOD (RGB + thermal fusion and detection) from a training YAML.",
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="training YAML, e.g. config/training/*.yaml"
    )
    parser.add_argument("--data", help="dataset root folder (sets dataset.root)")
    parser.add_argument("--out", help="output directory (sets output_dir)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last_state.pt and OUT/last.pt"
    )
    parser.add_argument(
        "--max-steps", type=int, help="stop after this many optimizer steps in total"
    )
    parser.add_argument("--epochs", type=int, help="number of epochs (sets epochs)")
    parser.add_argument("--batch-size", type=int, help="images per step and process")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (sets device)")
    add_set_arg(parser)
    return parser


def add_set_arg(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable), read by `parse_set`."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (dotted, VALUE parsed as YAML); repeatable",
    )


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as dotted overrides (VALUE parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_set(args.set)
    named = {
        "dataset.root": args.data,
        "output_dir": args.out,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    overrides.update({k: v for k, v in named.items() if v is not None})
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    config = load_training_config(args.config, _overrides(args))
    try:
        result = Trainer(config).fit(resume=args.resume)
    except FloatingPointError as error:  # a non-finite loss or gradient: not a usage error
        print(f"fusion-train: error: {error}", file=sys.stderr)
        return 1
    if result.last_checkpoint is not None:
        log.info("step %d: checkpoint %s", result.step, result.last_checkpoint)
    if result.best_checkpoint is not None:
        log.info(
            "best %s = %.4g: %s", config.eval.best_metric, result.best_value, result.best_checkpoint
        )
    return 0


def entry_point(argv: Sequence[str] | None = None) -> int:
    return run_cli("fusion-train", main, argv)


if __name__ == "__main__":
    sys.exit(entry_point())
