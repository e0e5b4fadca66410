"""fusion-infer: run a checkpoint on image files and write fused images, annotations and detections.

A pair that cannot be processed (an unreadable file, sizes that differ, an image too elongated for
the network) is reported and skipped; every other pair is still written, and the run then ends
with an error listing the bad files (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
from tqdm import tqdm

from fusion_perception.annotate import draw_detections
from fusion_perception.cli.common import (
    add_backend_args,
    add_thermal_args,
    run_cli,
    thermal_from_args,
)
from fusion_perception.engine import FusionEngine
from fusion_perception.image_codec import ImageEncodingError
from fusion_perception.image_files import index_images, read_rgb, read_thermal
from fusion_perception.pipeline import FramePipeline
from fusion_perception.registration import Registration
from fusion_perception.thermal import ThermalConfig

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-infer",
        description="Fuse and detect on RGB + thermal image pairs (files, or folders matched by stem).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file (.pt)")
    parser.add_argument("--rgb", required=True, type=Path, help="RGB image or folder of images")
    parser.add_argument("--thermal", required=True, type=Path, help="thermal image or folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--calibration", type=Path, help="thermal->RGB homography YAML")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--score-threshold", type=float, default=0.25)
    parser.add_argument("--nms-threshold", type=float, default=0.5)
    parser.add_argument("--max-detections", type=int, default=100)
    add_backend_args(parser, default="auto")
    add_thermal_args(parser)
    return parser


def list_images(path: Path) -> dict[str, Path]:
    """One image file, or a folder's images by stem."""
    return {path.stem: path} if path.is_file() else index_images(path)


def match_pairs(rgb: Path, thermal: Path) -> list[tuple[str, Path, Path]]:
    """Pairs by file stem; a single file on each side is paired regardless of its name."""
    rgb_files, thermal_files = list_images(rgb), list_images(thermal)
    if rgb.is_file() and thermal.is_file():
        return [(rgb.stem, rgb, thermal)]
    common = sorted(set(rgb_files) & set(thermal_files))
    unpaired = sorted(set(rgb_files) ^ set(thermal_files))
    if unpaired:
        log.warning("%d image(s) without a partner skipped: %s", len(unpaired), unpaired[:10])
    if not common:
        raise FileNotFoundError(f"--rgb/--thermal: no image stems in common in {rgb} and {thermal}")
    return [(stem, rgb_files[stem], thermal_files[stem]) for stem in common]


class PairsFailedError(ValueError):
    """Some pairs could not be processed; the others were written."""


def infer_pair(pipeline: FramePipeline, stem: str, rgb_path: Path, thermal_path: Path):
    """Read, normalize, register and run one pair; raises ValueError naming the problem."""
    rgb = read_rgb(rgb_path)
    raw = read_thermal(thermal_path)
    pipeline.reset()  # independent images: no temporal smoothing across files
    if pipeline.registration is None and raw.shape != rgb.shape[:2]:
        raise ValueError(
            f"{stem}: thermal {raw.shape[1]}x{raw.shape[0]} and RGB {rgb.shape[1]}x"
            f"{rgb.shape[0]} differ in size; pass --calibration"
        )
    frame = pipeline.run(rgb, raw)
    return frame.rgb, frame.result


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    pairs = match_pairs(args.rgb, args.thermal)
    engine = FusionEngine(
        args.checkpoint,
        device=args.device,
        score_threshold=args.score_threshold,
        nms_threshold=args.nms_threshold,
        max_detections=args.max_detections,
        backend=args.backend,
        artifact=args.artifact,
    )
    registration = Registration.from_yaml(args.calibration) if args.calibration else None
    thermal = thermal_from_args(args) or ThermalConfig()
    normalizer = thermal.normalizer(engine.checkpoint.thermal_normalization)
    pipeline = FramePipeline(engine, normalizer, registration)
    (args.out / "fused").mkdir(parents=True, exist_ok=True)
    (args.out / "annotated").mkdir(parents=True, exist_ok=True)
    records = []
    failed: list[str] = []
    for stem, rgb_path, thermal_path in tqdm(pairs, desc="fusion-infer", unit="pair"):
        try:
            rgb, result = infer_pair(pipeline, stem, rgb_path, thermal_path)
        except (ImageEncodingError, ValueError, TypeError, cv2.error) as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            failed.append(f"{rgb_path} + {thermal_path}: {reason}")
            tqdm.write(f"fusion-infer: skipped pair {stem}: {reason}")
            continue
        fused = result.fused_rgb(rgb)
        annotated = draw_detections(fused, result.detections, engine.class_names)
        cv2.imwrite(str(args.out / "fused" / f"{stem}.png"), cv2.cvtColor(fused, cv2.COLOR_RGB2BGR))
        cv2.imwrite(
            str(args.out / "annotated" / f"{stem}.png"), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR)
        )
        for box, score, label in zip(
            result.detections.boxes,
            result.detections.scores,
            result.detections.labels,
            strict=True,
        ):
            records.append(
                {
                    "image": stem,
                    "class_id": int(label),
                    "class_name": engine.class_names[int(label)],
                    "score": round(float(score), 5),
                    "bbox": [round(float(v), 2) for v in box[:4]],
                    "angle": round(float(box[4]), 5),
                }
            )
    (args.out / "detections.json").write_text(json.dumps(records, indent=1))
    done = len(pairs) - len(failed)
    log.info("%d pair(s), %d detection(s) -> %s", done, len(records), args.out)
    if failed:
        raise PairsFailedError(
            f"{len(failed)} of {len(pairs)} pair(s) could not be processed (the other {done} "
            "were written):\n  " + "\n  ".join(failed)
        )
    return 0


def entry_point() -> int:
    return run_cli("fusion-infer", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
