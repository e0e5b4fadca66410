"""fusion-bag2dataset: turn rosbag2 recordings (sqlite3 or mcap) into a paired-folder dataset."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from fusion_perception.checkpoint import DEFAULT_NORMALIZATION, load_checkpoint
from fusion_perception.cli.common import add_thermal_args, normalizer_from_args, run_cli
from fusion_perception.pairing import SyncConfig
from fusion_perception.registration import Registration
from fusion_perception.settings import add_flags, replace_from_flags
from fusion_perception.thermal import ThermalNormalizer
from fusion_training.bag2dataset import OFFLINE_SYNC, convert_bags, sync_from_node_params
from fusion_training.datasets.folder import LABEL_FORMATS
from fusion_training.pseudo_labels import PseudoLabeler

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-bag2dataset",
        description=(
            "Pair, decode and register RGB + thermal frames from rosbag2 recordings with the "
            "node's own code, and write a paired-folder dataset (rgb/, thermal/ raw counts, "
            "labels/, manifest.yaml, source.yaml)."
        ),
    )
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (or .mcap/.db3)")
    parser.add_argument("--rgb-topic", required=True, help="Image or CompressedImage topic")
    parser.add_argument(
        "--thermal-topic",
        required=True,
        help="Image (mono16/mono8/32FC1) or CompressedImage (16-bit PNG) topic",
    )
    parser.add_argument("--out", required=True, type=Path, help="new (or empty) output folder")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th pair (default 1)")
    parser.add_argument(
        "--calibration", type=Path, help="thermal->RGB homography YAML; thermal is registered"
    )
    labels = parser.add_argument_group("labels")
    labels.add_argument(
        "--pseudo-labels", type=Path, metavar="CKPT", help="write a checkpoint's detections"
    )
    labels.add_argument(
        "--score-threshold", type=float, default=0.5, help="pseudo-label minimum score"
    )
    labels.add_argument("--device", default="auto", help="pseudo-labels: auto, cpu or cuda[:N]")
    labels.add_argument(
        "--classes", help="comma-separated class names (required without --pseudo-labels)"
    )
    labels.add_argument(
        "--label-format",
        choices=LABEL_FORMATS,
        default="yolo",
        help="label format without --pseudo-labels",
    )
    sync = parser.add_argument_group(
        "pairing (the node's sync.* parameters; --max-age is off offline: it compares stamps "
        "with the bag's log time)"
    )
    sync.add_argument("--params", type=Path, help="node parameter YAML to take sync.* from")
    add_flags(sync, SyncConfig, "sync", defaults=OFFLINE_SYNC)
    add_thermal_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def sync_from_args(args: argparse.Namespace) -> SyncConfig:
    settings = sync_from_node_params(args.params) if args.params else OFFLINE_SYNC
    return replace_from_flags(settings, args, "sync")


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    sync = sync_from_args(args)
    registration = Registration.from_yaml(args.calibration) if args.calibration else None
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise ValueError(f"--classes: no class names in {args.classes!r}")
    normalizer = normalizer_from_args(args)
    labeler = None
    if args.pseudo_labels is not None:
        checkpoint = load_checkpoint(args.pseudo_labels)
        if normalizer is None:
            normalizer = ThermalNormalizer.recorded(checkpoint.thermal_normalization)
        labeler = PseudoLabeler(
            args.pseudo_labels, normalizer, device=args.device, score_threshold=args.score_threshold
        )
    if normalizer is None:
        normalizer = ThermalNormalizer(
            DEFAULT_NORMALIZATION["scheme"], DEFAULT_NORMALIZATION["params"]
        )
    result = convert_bags(
        args.bags,
        args.out,
        args.rgb_topic,
        args.thermal_topic,
        normalization=normalizer,
        every=args.every,
        sync=sync,
        registration=registration,
        classes=classes,
        label_format=args.label_format,
        pseudo_labeler=labeler,
        progress=not args.no_progress,
    )
    labels = f", {result.objects} pseudo-label object(s)" if labeler is not None else ""
    log.info("%d pair(s)%s -> %s", result.pairs_written, labels, result.out)
    return 0


def entry_point() -> int:
    return run_cli("fusion-bag2dataset", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
