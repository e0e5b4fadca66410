"""fusion-eval: fusion metrics and detection AP of a checkpoint on a dataset, or fusion metrics of
any method's fused images.

    fusion-eval --checkpoint CKPT --data DIR [--format folder] [--split S] --out metrics.json
    fusion-eval --fused DIR --rgb DIR --thermal DIR --out metrics.json
    fusion-eval --benchmark vifb (--checkpoint CKPT | --fused DIR) --out DIR [--data-root ROOT]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli.common import (
    add_backend_args,
    add_thermal_args,
    normalizer_from_args,
    run_cli,
)
from fusion_training.benchmark import BENCHMARKS, run_vifb
from fusion_training.datasets import FORMATS, build_dataset
from fusion_training.datasets.factory import accepted_options
from fusion_training.datasets.naming import named_as
from fusion_training.evaluate import (
    MODALITIES,
    blank_modality,
    evaluate_checkpoint,
    evaluate_fused_folder,
    json_ready,
)
from fusion_training.metrics.detection import AP_INTERPOLATIONS
from fusion_training.metrics.fusion import PRESETS
from fusion_training.result_tables import print_tables

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
    parser.add_argument(
        "--out", required=True, type=Path, help="metrics JSON file to write (--benchmark: a folder)"
    )
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
    model.add_argument(
        "--ap-interpolation",
        default="all-point",
        choices=AP_INTERPOLATIONS,
        help="rotated checkpoints: VOC 2010+ all-point AP (default) or VOC 2007 11-point AP "
        "(mmrotate's and the DOTA devkit's default, which DroneVehicle papers report)",
    )
    add_dataset_option_args(parser)
    # torch by default: scores must not depend on which runtimes happen to be installed
    add_backend_args(parser, default="torch")
    fused = parser.add_argument_group("fused-images mode")
    fused.add_argument("--fused", type=Path, help="folder of fused images (matched by stem)")
    fused.add_argument("--rgb", type=Path, help="folder of visible source images")
    fused.add_argument("--thermal", type=Path, help="folder of thermal source images")
    bench = parser.add_argument_group("benchmark mode (with --checkpoint, or --fused alone)")
    bench.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        help="rank the checkpoint or the fused images (named by pair) among the benchmark's "
        "published methods on its pairs, in the textbook and the benchmark's conventions; writes "
        "a markdown table, bar plots and JSON into --out",
    )
    bench.add_argument(
        "--data-root",
        type=Path,
        help="--benchmark: shared data root with vifb/ and vifb_methods/ (default: "
        "$FUSION_SHARED_DATA, else ../shared/data beside the repository)",
    )
    add_thermal_args(parser)
    return parser


def _check_mode(args: argparse.Namespace) -> None:
    if args.fused is not None:
        if args.checkpoint is not None or args.data is not None:
            raise ValueError("--fused: cannot be combined with --checkpoint/--data")
        if args.rgb is None or args.thermal is None:
            raise ValueError("--fused: needs --rgb and --thermal source folders")
        given = [flag for flag, _, _ in _given_dataset_options(args)]
        if given:
            raise ValueError(f"{', '.join(given)}: dataset options are for --checkpoint mode")
        if args.backend != "torch" or args.artifact is not None:
            raise ValueError("--backend/--artifact: run a checkpoint; not for --fused mode")
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
    checkpoint = load_checkpoint(checkpoint_path)
    if args.ap_interpolation != "all-point" and not checkpoint.model_config.detection_head.rotated:
        raise ValueError(
            "--ap-interpolation: only for rotated checkpoints; horizontal boxes are scored with "
            "COCO mAP (101-point)"
        )
    if args.format != "synthetic":
        options.update(dataset_options_from_args(args))
        dataset = build_dataset(args.format, args.data, **options)
        try:
            return named_as(dataset, checkpoint.class_names)
        except ValueError as error:
            raise ValueError(f"--data: {error}") from None
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


# Dataset options a training recipe sets in dataset.options, as flags: (flag, option, help).
DATASET_FLAGS = (
    ("--labels", "labels", "dronevehicle: whose label files to score against, rgb or ir"),
    ("--classes", "classes", "m3fd, dronevehicle: comma-separated class list (order and subset)"),
    ("--split-file", "split_file", "m3fd: file of stems to evaluate (one per line)"),
    ("--skip-invalid", "skip_invalid", "leave out invalid pairs (logged) instead of failing"),
    ("--keep-border", "remove_border", "dronevehicle: keep the 100-pixel white border"),
    ("--border", "border", "dronevehicle: width of the white border to remove (default 100)"),
)


def add_dataset_option_args(parser: argparse.ArgumentParser) -> None:
    """The DATASET_FLAGS group; a flag left unset leaves the format's default."""
    group = parser.add_argument_group(
        "dataset options (checkpoint mode; the recipe's dataset.options, where the format has them)"
    )
    for flag, _, text in DATASET_FLAGS:
        if flag in ("--skip-invalid", "--keep-border"):
            group.add_argument(flag, action="store_true", default=None, help=text)
        elif flag == "--labels":
            group.add_argument(flag, choices=("rgb", "ir"), help=text)
        elif flag == "--border":
            group.add_argument(flag, type=int, metavar="PIXELS", help=text)
        elif flag == "--split-file":
            group.add_argument(flag, type=Path, metavar="PATH", help=text)
        else:
            group.add_argument(flag, metavar="NAMES", help=text)


def _given_dataset_options(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """(flag, option, value) of every DATASET_FLAGS flag given on the command line."""
    given = []
    for flag, option, _ in DATASET_FLAGS:
        value = getattr(args, option if flag != "--keep-border" else "keep_border")
        if value is None:
            continue
        if flag == "--keep-border":
            value = False  # remove_border=False
        elif flag == "--classes":
            value = [name.strip() for name in value.split(",") if name.strip()]
        given.append((flag, option, value))
    return given


def dataset_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for build_dataset from DATASET_FLAGS; ValueError names a flag the chosen
    --format does not take."""
    given = _given_dataset_options(args)
    accepted = set(accepted_options(FORMATS[args.format])) - {"transform"}
    if args.format == "synthetic":
        accepted = set()  # its scenes follow the checkpoint (classes, size)
    for flag, option, _ in given:
        if option not in accepted:
            takes = sorted(f for f, o, _ in DATASET_FLAGS if o in accepted)
            raise ValueError(
                f"{flag}: not an option of --format {args.format} (it takes "
                f"{', '.join(takes) if takes else 'none of the dataset flags'})"
            )
    options = {option: value for _, option, value in given}
    if "border" in options and options.get("remove_border") is False:
        raise ValueError("--border: has no effect with --keep-border; give one of them")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.benchmark is not None:  # fusion_training.benchmark does the work
        other = (("--data", args.data), ("--rgb", args.rgb), ("--thermal", args.thermal))
        other += (("--split", args.split), ("--blank", args.blank))
        other += (("--preset", None if args.preset == "textbook" else args.preset),)
        given = [flag for flag, value in other if value is not None]
        given += [flag for flag, _, _ in _given_dataset_options(args)]
        if given:
            raise ValueError(
                f"--benchmark: scores the benchmark's own pairs in both conventions; drop "
                f"{', '.join(given)}"
            )
        _, paths = run_vifb(
            args.out,
            checkpoint=args.checkpoint,
            fused=args.fused,
            data_root=args.data_root,
            limit=args.limit,
            device=args.device,
            progress=True,
            log=log.info,
            backend=args.backend,
            artifact=args.artifact,
        )
        print(paths["markdown"].read_text(encoding="utf-8"))
        return 0
    if args.data_root is not None:
        raise ValueError("--data-root: only with --benchmark")
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
            ap_interpolation=args.ap_interpolation,
            backend=args.backend,
            artifact=args.artifact,
        )
        results["meta"].update(
            checkpoint=str(args.checkpoint),
            data=None if args.data is None else str(args.data),
            format=args.format,
            split=args.split,
            blank=args.blank,
            dataset_options={
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataset_options_from_args(args).items()
            },
            class_aliases=getattr(dataset, "aliases", {}),
        )
        if results["meta"].get("rotated"):
            results["meta"]["ap_interpolation"] = args.ap_interpolation
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
