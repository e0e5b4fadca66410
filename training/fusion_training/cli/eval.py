"""fusion-eval: fusion metrics and detection AP of a checkpoint on a dataset, or fusion metrics of
any method's fused images.

    fusion-eval --checkpoint CKPT --data DIR [--format folder] [--split S] --out metrics.json
    fusion-eval --fused DIR --rgb DIR --thermal DIR --out metrics.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli.common import run_cli
from fusion_training.cli.bag2dataset import add_normalization_args, normalizer_from_args
from fusion_training.datasets import FORMATS, build_dataset
from fusion_training.evaluate import (
    MODALITIES,
    blank_modality,
    evaluate_checkpoint,
    evaluate_fused_folder,
    json_ready,
)
from fusion_training.metrics.fusion import PRESETS

log = logging.getLogger(__name__)
SYNTHETIC_LENGTH = 32
SYNTHETIC_SEED = 1000  # validation scenes; the training recipes use seed 0 for training


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-eval",
        description=(
            "Score a checkpoint on a dataset (fusion metrics + detection AP), or score fused "
            "images of any method against their sources (--fused, fusion metrics only)."
        ),
        epilog=(
            "--normalization maps raw (e.g. 16-bit) thermal to [0, 1]: for the sources in "
            "--fused mode, or instead of the dataset's own scheme with --checkpoint."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    parser.add_argument(
        "--preset",
        default="textbook",
        choices=sorted(PRESETS),
        help="fusion-metric conventions of a published suite (default: textbook)",
    )
    model = parser.add_argument_group("checkpoint mode")
    model.add_argument("--checkpoint", type=Path, help="checkpoint file (.pt)")
    model.add_argument("--data", type=Path, help="dataset root (not for --format synthetic)")
    model.add_argument(
        "--format",
        default="folder",
        choices=sorted(set(FORMATS) - {"mixture"}),  # a mixture needs its parts from a YAML
        help="dataset format",
    )
    model.add_argument("--split", help="dataset split (format-specific, e.g. val, test)")
    model.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    model.add_argument("--limit", type=int, help="evaluate only the first N images")
    model.add_argument(
        "--blank",
        choices=MODALITIES,
        help="zero this camera's input (how the model does when that camera is lost)",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=SYNTHETIC_SEED,
        help="--format synthetic: scene seed (default %(default)s; the training recipes train on 0)",
    )
    model.add_argument(
        "--night-probability",
        type=float,
        default=0.5,
        help="--format synthetic: share of night scenes (1 = night only)",
    )
    model.add_argument("--score-threshold", type=float, default=0.001)
    model.add_argument("--nms-threshold", type=float, default=0.5)
    model.add_argument("--max-detections", type=int, default=100)
    fused = parser.add_argument_group("fused-images mode")
    fused.add_argument("--fused", type=Path, help="folder of fused images (matched by stem)")
    fused.add_argument("--rgb", type=Path, help="folder of visible source images")
    fused.add_argument("--thermal", type=Path, help="folder of thermal source images")
    add_normalization_args(parser)
    return parser


def _check_mode(args: argparse.Namespace) -> None:
    if args.fused is not None:
        if args.checkpoint is not None or args.data is not None:
            raise ValueError("--fused: cannot be combined with --checkpoint/--data")
        if args.rgb is None or args.thermal is None:
            raise ValueError("--fused: needs --rgb and --thermal source folders")
        return
    if args.checkpoint is None:
        raise ValueError("--checkpoint: required (or use --fused/--rgb/--thermal)")
    if args.format == "synthetic":
        if args.data is not None:
            raise ValueError("--data: --format synthetic generates its scenes and takes no folder")
    elif args.data is None:
        raise ValueError(f"--data: required for --format {args.format}")
    if args.rgb is not None or args.thermal is not None:
        raise ValueError("--rgb/--thermal: only for --fused mode")


def _dataset(args: argparse.Namespace, checkpoint_path: Path):
    options: dict[str, Any] = {}
    if args.split is not None:
        options["split"] = args.split
    normalizer = normalizer_from_args(args)
    if normalizer is not None:
        options["thermal_normalization"] = normalizer
    if args.blank is not None:
        options["transform"] = blank_modality(args.blank)
    if args.format != "synthetic":
        return build_dataset(args.format, args.data, **options)
    checkpoint = load_checkpoint(checkpoint_path)
    width, height = checkpoint.input_size
    return build_dataset(
        "synthetic",
        length=args.limit or SYNTHETIC_LENGTH,
        width=width,
        height=height,
        classes=checkpoint.class_names,
        rotated=checkpoint.model_config.detection_head.rotated,
        seed=args.seed,
        night_probability=args.night_probability,
        **options,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _rows(results: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the tables to print."""
    tables = [
        (
            f"fusion metrics ({results['meta']['preset']}, mean over "
            f"{results['meta']['images']} images)",
            ["metric", "value"],
            [[name, _fmt(value)] for name, value in results["fusion"].items()],
        )
    ]
    detection = results.get("detection")
    if detection:
        if "AP50" in detection:
            header = ["class", "AP50"]
            rows = [[n, _fmt(v)] for n, v in detection["per_class"].items()]
            rows.append(["all", _fmt(detection["AP50"])])
        else:
            header = ["class", "AP50", "AP50:95"]
            rows = [
                [n, _fmt(v), _fmt(detection["per_class_50_95"][n])]
                for n, v in detection["per_class"].items()
            ]
            rows.append(["all", _fmt(detection["mAP50"]), _fmt(detection["mAP50_95"])])
        tables.append(("detection", header, rows))
    return tables


def print_tables(results: Mapping[str, Any]) -> None:
    """Tables with rich when it is installed, aligned plain text otherwise."""
    tables = _rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for title, header, rows in tables:
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            print(title)
            for row in [header, *rows]:
                cells = [row[0].ljust(widths[0])]
                cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
                print("  " + "  ".join(cells))
        return
    console = Console()
    for title, header, rows in tables:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    _check_mode(args)
    if args.fused is not None:
        results = evaluate_fused_folder(
            args.fused,
            args.rgb,
            args.thermal,
            preset=args.preset,
            thermal_normalization=normalizer_from_args(args),
            progress=True,
            on_skip=log.warning,
        )
        results["meta"]["fused"] = str(args.fused)
    else:
        dataset = _dataset(args, args.checkpoint)
        results = evaluate_checkpoint(
            args.checkpoint,
            dataset,
            device=args.device,
            preset=args.preset,
            score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold,
            max_detections=args.max_detections,
            limit=args.limit,
            progress=True,
        )
        results["meta"].update(
            checkpoint=str(args.checkpoint),
            data=None if args.data is None else str(args.data),
            format=args.format,
            split=args.split,
            blank=args.blank,
        )
        if args.format == "synthetic":
            results["meta"].update(seed=args.seed, night_probability=args.night_probability)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_ready(results), indent=1, allow_nan=False))
    print_tables(results)
    log.info("wrote %s", args.out)
    return 0


def entry_point() -> int:
    return run_cli("fusion-eval", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
