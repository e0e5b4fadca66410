"""fusion-bag2dataset: turn rosbag2 recordings (sqlite3 or mcap) into a paired-folder dataset."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_perception.checkpoint import DEFAULT_NORMALIZATION, load_checkpoint
from fusion_perception.cli.common import run_cli
from fusion_perception.imaging import Registration, ThermalNormalizer, make_normalizer
from fusion_training.datasets.folder import LABEL_FORMATS

if TYPE_CHECKING:
    from fusion_training.bag2dataset import SyncSettings

log = logging.getLogger(__name__)

# CLI flag -> (scheme it belongs to, parameter name); the node's thermal.* parameters.
_NORMALIZATION_FLAGS = {
    "range_lo": ("fixed_range", "lo"),
    "range_hi": ("fixed_range", "hi"),
    "p_lo": ("percentile", "p_lo"),
    "p_hi": ("percentile", "p_hi"),
    "ema": ("percentile", "ema"),
}


def add_normalization_args(parser: argparse.ArgumentParser) -> None:
    """--normalization SCHEME with the node's thermal.* parameters as flags."""
    group = parser.add_argument_group("thermal normalization (the node's thermal.* parameters)")
    group.add_argument(
        "--normalization",
        choices=("fixed_range", "percentile", "minmax"),
        help="scheme mapping raw thermal to [0, 1]",
    )
    group.add_argument("--range-lo", type=float, help="fixed_range: raw value mapped to 0")
    group.add_argument("--range-hi", type=float, help="fixed_range: raw value mapped to 1")
    group.add_argument("--p-lo", type=float, help="percentile: low percentile (default 1)")
    group.add_argument("--p-hi", type=float, help="percentile: high percentile (default 99)")
    group.add_argument("--ema", type=float, help="percentile: EMA factor of the bounds (0.9)")


def normalizer_from_args(args: argparse.Namespace) -> ThermalNormalizer | None:
    """The normalizer the flags describe, or None when --normalization is not given."""
    given = {flag: getattr(args, flag) for flag in _NORMALIZATION_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}
    if args.normalization is None:
        if given:
            flag = next(iter(given)).replace("_", "-")
            raise ValueError(f"--{flag}: needs --normalization to say which scheme it belongs to")
        return None
    params = {}
    for flag, value in given.items():
        scheme, name = _NORMALIZATION_FLAGS[flag]
        if scheme != args.normalization:
            raise ValueError(
                f"--{flag.replace('_', '-')}: applies to --normalization {scheme}, "
                f"not {args.normalization}"
            )
        params[name] = value
    if args.normalization == "fixed_range" and not {"lo", "hi"} <= set(params):
        raise ValueError("--normalization fixed_range: needs --range-lo and --range-hi")
    return make_normalizer(args.normalization, **params)


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
    parser.add_argument("--thermal-topic", required=True, help="Image topic (mono16/mono8/32FC1)")
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
    sync = parser.add_argument_group("pairing (the node's sync.* parameters)")
    sync.add_argument("--params", type=Path, help="node parameter YAML to take sync.* from")
    sync.add_argument("--sync-mode", choices=("approximate", "exact"), help="sync.mode")
    sync.add_argument("--slop", type=float, help="sync.slop: max |dt| of a pair, s (0.02)")
    sync.add_argument("--rgb-offset", type=float, help="sync.rgb_offset, s (0)")
    sync.add_argument("--thermal-offset", type=float, help="sync.thermal_offset, s (0)")
    sync.add_argument("--queue-size", type=int, help="sync.queue_size (10)")
    sync.add_argument(
        "--max-age",
        type=float,
        help="sync.max_age against the bag's log time, s (default: off offline)",
    )
    add_normalization_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def sync_from_args(args: argparse.Namespace) -> SyncSettings:
    from fusion_training.bag2dataset import SyncSettings

    settings = SyncSettings.from_node_params(args.params) if args.params else SyncSettings()
    overrides: dict[str, Any] = {
        "mode": args.sync_mode,
        "slop": args.slop,
        "rgb_offset": args.rgb_offset,
        "thermal_offset": args.thermal_offset,
        "queue_size": args.queue_size,
        "max_age": args.max_age,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings.engine()
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    # imported here so fusion-eval can share the argument helpers above without rosbags
    from fusion_training.bag2dataset import PseudoLabeler, convert_bags

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
            normalizer = ThermalNormalizer.from_dict(checkpoint.thermal_normalization)
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
