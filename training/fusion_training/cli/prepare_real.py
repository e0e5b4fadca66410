"""fusion-prepare-real: RoadScene + TNO real pairs -> a paired-folder dataset with mapped FLIR boxes.

fusion-prepare-real --out data/real_pairs [--data-root DIR] [--figure PATH] [--overwrite]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fusion_perception.cli.common import run_cli
from fusion_training.real_pairs import (
    ENV_VAR,
    PrepareSettings,
    default_data_root,
    format_summary,
    prepare_real_pairs,
)


def get_args_parser() -> argparse.ArgumentParser:
    defaults = PrepareSettings()
    parser = argparse.ArgumentParser(
        prog="fusion-prepare-real",
        description=(
            "Register RoadScene's pairs in the FLIR frames, map FLIR's person/car boxes onto them "
            "and write RoadScene + TNO as a paired-folder dataset (unregistered and TNO pairs "
            "are fusion-only). Prints a summary and writes summary.json and a check figure."
        ),
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        help=f"folder holding roadscene/ and tno/ (default: ${ENV_VAR}, else ../shared/data "
        "beside the repository)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/real_pairs"), help="output folder (%(default)s)"
    )
    parser.add_argument("--figure", type=Path, help="check figure (default <out>/mapped_boxes.png)")
    parser.add_argument("--no-figure", action="store_true", help="write no figure")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier output of this tool in --out"
    )
    checks = parser.add_argument_group("registration and box checks")
    checks.add_argument(
        "--min-score",
        type=float,
        default=defaults.min_score,
        help="least normalised correlation of ir/ against the registered FLIR frame (%(default)s)",
    )
    checks.add_argument(
        "--min-inliers",
        type=int,
        default=defaults.min_inliers,
        help="least RANSAC-consistent feature matches (%(default)s)",
    )
    checks.add_argument(
        "--min-coverage",
        type=float,
        default=defaults.min_coverage,
        help="least share of ir/ inside the FLIR frame (%(default)s)",
    )
    checks.add_argument(
        "--min-visible",
        type=float,
        default=defaults.min_visible,
        help="least share of a mapped box left after clipping (%(default)s)",
    )
    checks.add_argument(
        "--min-size",
        type=float,
        default=defaults.min_size,
        help="least shorter side of a kept box, px (%(default)s)",
    )
    split = parser.add_argument_group("split and figure")
    split.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share of the labelled RoadScene pairs in val (%(default)s)",
    )
    split.add_argument("--seed", type=int, default=defaults.seed, help="val split seed")
    split.add_argument(
        "--figure-pairs",
        type=int,
        default=defaults.figure_pairs,
        help="labelled pairs shown (%(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.no_figure and args.figure is not None:
        raise ValueError("--figure: cannot be combined with --no-figure")
    settings = PrepareSettings(
        min_score=args.min_score,
        min_inliers=args.min_inliers,
        min_coverage=args.min_coverage,
        min_visible=args.min_visible,
        min_size=args.min_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        figure_pairs=args.figure_pairs,
    )
    summary = prepare_real_pairs(
        args.data_root if args.data_root is not None else default_data_root(),
        args.out,
        settings,
        figure=False if args.no_figure else args.figure,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    print(f"wrote {args.out} (manifest.yaml, summary.json)")
    return 0


def entry_point() -> int:
    return run_cli("fusion-prepare-real", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
