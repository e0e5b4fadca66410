"""fusion-calibrate: fit what a checkpoint's detection scores mean on held-out labelled pairs, and
write the checkpoint with that calibration.

    fusion-calibrate --checkpoint best.pt --data data/real_pairs --split val --out calibrated.pt \
        --figure calibration.png --report calibration.json

Afterwards a box's score estimates the chance that it is a correct detection (right class,
IoU >= --iou), so a threshold of 0.3 keeps boxes each of which is right at least about 30 % of
the time on data like the fit's (the kept set as a whole more often). Ranking, NMS and AP do not change (`fusion_perception.score_calibration`). Fit on a split
the checkpoint was not trained on, and never on a set you will report results on.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fusion_perception.checkpoint import load_checkpoint, save_checkpoint
from fusion_perception.cli.common import run_cli
from fusion_perception.engine import FusionEngine
from fusion_training.datasets import FORMATS, build_dataset
from fusion_training.datasets.naming import named_as
from fusion_training.score_fit import (
    calibrate,
    expected_calibration_error,
    held_out_scores,
    plot_reliability,
    reliability,
)

log = logging.getLogger(__name__)
REPORT_THRESHOLD = 0.3  # the threshold the summary counts boxes at (the node's default)
HELD_OUT_FOLDS = 10  # images dealt into this many folds for the held-out estimate


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-calibrate",
        description="Fit a checkpoint's score calibration (Platt scaling) on labelled pairs.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file (.pt)")
    parser.add_argument("--data", required=True, type=Path, help="dataset root")
    parser.add_argument(
        "--format",
        default="folder",
        choices=sorted(set(FORMATS) - {"mixture", "synthetic"}),
        help="dataset format (default: %(default)s)",
    )
    parser.add_argument("--split", default="val", help="split to fit on (default: %(default)s)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    parser.add_argument(
        "--iou", type=float, default=0.5, help="IoU a correct box needs (default: %(default)s)"
    )
    parser.add_argument(
        "--nms-threshold",
        type=float,
        default=0.5,
        help="NMS IoU of the engine (keep the one you run with; default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N items")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--figure", type=Path, help="reliability diagram to write (.png)")
    parser.add_argument("--report", type=Path, help="JSON with the fit and its score bins")
    return parser


def _kept(scores: np.ndarray, correct: np.ndarray) -> dict[str, int]:
    kept = scores >= REPORT_THRESHOLD
    return {"boxes": int(kept.sum()), "correct": int(correct[kept].sum())}


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: must be >= 1, got {args.limit}")
    if args.out.resolve() == args.checkpoint.resolve():
        log.info("%s will be replaced by its calibrated copy", args.out)
    checkpoint = load_checkpoint(args.checkpoint)
    dataset = build_dataset(args.format, args.data, split=args.split)
    try:
        dataset = named_as(dataset, checkpoint.class_names)
    except ValueError as error:
        raise ValueError(f"--data: {error}") from None
    engine = FusionEngine(
        checkpoint,
        device=args.device,
        score_threshold=0.001,
        nms_threshold=args.nms_threshold,
        backend="torch",
        calibrated_scores=False,  # fit the raw scores; a calibrated input is refitted from raw
    )
    fitted_on = {"data": str(args.data), "format": args.format, "split": args.split}
    calibration, boxes = calibrate(
        engine, dataset, fitted_on=fitted_on, iou=args.iou, limit=args.limit, progress=True
    )
    calibrated = calibration.apply(torch.as_tensor(boxes.scores)).numpy()
    held_out = held_out_scores(boxes, HELD_OUT_FOLDS) if boxes.images >= 2 else None
    summary = {
        "slope": calibration.slope,
        "offset": calibration.offset,
        "fitted_on": calibration.fitted_on,
        "ece": {
            "raw": expected_calibration_error(boxes.scores, boxes.correct),
            "calibrated": expected_calibration_error(calibrated, boxes.correct),
            "held_out": None
            if held_out is None
            else expected_calibration_error(held_out, boxes.correct),
        },
        "at_threshold": {
            "threshold": REPORT_THRESHOLD,
            "raw_equivalent": calibration.raw_threshold(REPORT_THRESHOLD),
            "raw": _kept(boxes.scores, boxes.correct),
            "calibrated": _kept(calibrated, boxes.correct),
            "held_out": None if held_out is None else _kept(held_out, boxes.correct),
        },
        "bins": {
            "raw": reliability(boxes.scores, boxes.correct),
            "calibrated": reliability(calibrated, boxes.correct),
        },
    }
    save_checkpoint(replace(checkpoint, score_calibration=calibration), args.out)
    at = summary["at_threshold"]
    print(
        f"score calibration: slope {calibration.slope:.4f}, offset {calibration.offset:.4f} "
        f"({boxes.images} images, {boxes.objects} objects, {boxes.scores.size} boxes, "
        f"{int(boxes.correct.sum())} correct)\n"
        f"ECE: raw {summary['ece']['raw']:.3f} -> calibrated {summary['ece']['calibrated']:.3f}"
        + (
            ""
            if held_out is None
            else f" (held out, {HELD_OUT_FOLDS} folds by image: {summary['ece']['held_out']:.3f})"
        )
        + "\n"
        f"at score {REPORT_THRESHOLD} (raw {at['raw_equivalent']:.3f}): "
        f"{at['raw']['boxes']} boxes ({at['raw']['correct']} correct) before, "
        f"{at['calibrated']['boxes']} ({at['calibrated']['correct']} correct) after\n"
        f"wrote {args.out}"
    )
    if args.figure is not None:
        title = f"{args.checkpoint.name} on {args.data.name} {args.split}"
        print(f"wrote {plot_reliability(boxes, calibration, args.figure, title, held_out)}")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.report}")
    return 0


def entry_point() -> int:
    return run_cli("fusion-calibrate", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
