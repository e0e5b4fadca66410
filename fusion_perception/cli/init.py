"""fusion-init: write an untrained checkpoint from a model config (starting point for fusion-train)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from fusion_perception.checkpoint import new_checkpoint, save_checkpoint
from fusion_perception.cli.common import parse_size, run_cli
from fusion_perception.model import build_model, load_model_config

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-init",
        description="Write an untrained UniFusOD checkpoint from a model config.",
    )
    parser.add_argument("config", type=Path, help="model YAML, e.g. config/models/nano.yaml")
    parser.add_argument("out", type=Path, help="checkpoint file to write (.pt)")
    parser.add_argument(
        "--classes", help="comma-separated class names (sets num_classes); default: config's"
    )
    parser.add_argument(
        "--backbone-weights", type=Path, help="state-dict file for a torchvision backbone"
    )
    parser.add_argument("--size", default="640x512", help="network input WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    overrides = {}
    class_names = None
    if args.classes:
        class_names = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not class_names:
            raise ValueError(f"--classes: no class names in {args.classes!r}")
        overrides["detection_head.num_classes"] = len(class_names)
    if args.backbone_weights:
        if not args.backbone_weights.is_file():
            raise FileNotFoundError(f"--backbone-weights: {args.backbone_weights} does not exist")
        overrides["backbone.weights"] = str(args.backbone_weights)
    config = load_model_config(args.config).with_overrides(overrides)
    num_classes = config.detection_head.num_classes
    class_names = class_names or [f"class_{i}" for i in range(num_classes)]
    model = build_model(config)
    checkpoint = new_checkpoint(
        model,
        config,
        class_names,
        parse_size(args.size),
        provenance={"tool": "fusion-init", "config_file": str(args.config), "seed": args.seed},
    )
    save_checkpoint(checkpoint, args.out)
    params = sum(p.numel() for p in model.parameters())
    log.info("wrote %s (%d parameters, classes: %s)", args.out, params, ", ".join(class_names))
    return 0


def entry_point() -> int:
    return run_cli("fusion-init", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
