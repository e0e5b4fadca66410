"""docs/real_imagery.md: the shipped model on real, held-apart visible/infrared data.

Scores a checkpoint with the package's own code paths (FusionEngine as `fusion-infer` runs it,
`fusion_training.evaluate` as `fusion-eval` runs it) on VIFB (fusion, against five published
methods and two pixel baselines), the LLVIP night sample (person AP), synthetic night scenes
(mAP50), and times its forward pass at 640x512 against an older checkpoint. Writes the markdown,
its figures (PNG) and every number in machine-readable form under <out>/real_imagery/.

    .venv/bin/python tools/real_imagery.py [--checkpoint models/demo.pt] [--baseline OLD.pt]
        [--ablation NAME=PATH ...] [--data ../shared/data] [--out docs] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
import torch
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "training"), str(REPO / "tools")]

from bench import machine  # noqa: E402
from fusion_training import benchmark  # noqa: E402
from fusion_training.datasets import build_dataset  # noqa: E402
from fusion_training.evaluate import evaluate_checkpoint, json_ready  # noqa: E402
from fusion_training.score_fit import score_boxes  # noqa: E402

from fusion_perception.annotate import draw_detections  # noqa: E402
from fusion_perception.checkpoint import load_checkpoint  # noqa: E402
from fusion_perception.colour import merge_fused_luma  # noqa: E402
from fusion_perception.engine import Detections, FusionEngine  # noqa: E402
from fusion_perception.image_files import read_rgb  # noqa: E402
from fusion_perception.synthetic import SceneGenerator  # noqa: E402

# Section 1's table is fusion_training.benchmark's textbook convention (fusion-eval --benchmark).
PRESET = "textbook"
METRICS = benchmark.CONVENTION_METRICS[PRESET]  # EN SD SF AG MI VIF Qabf SSIM SCD
PUBLISHED = benchmark.PUBLISHED
# Requirements the model has to meet (targets, not results).
VIFB_FLOORS = {"Qabf": 0.565, "VIF": 0.652, "AG": 3.96}  # strictly above
MAX_BOXES_PER_SCENE = 10
LLVIP_AP50_FLOOR = 0.70
NIGHT_MAP50_FLOOR = 0.80
# The evaluator's default threshold for AP (fusion-eval --score-threshold, evaluate_checkpoint).
AP_SCORE_THRESHOLD = 0.001
SYNTHETIC_SEED = 5000  # README's night evaluation: --night-probability 1.0 --seed 5000 --limit 100
TIMING_SIZE = (640, 512)
VIFB_STRIP_PAIRS = ("nightCar", "walkingnight", "carLight")
LLVIP_STRIP_FIXED = "010005"
TILE_WIDTH = 256


def default_data() -> Path:
    env = os.environ.get("FUSION_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def ablation_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Every number in the report is computed here."
    )
    parser.add_argument("--checkpoint", type=Path, default=REPO / "models" / "demo.pt")
    parser.add_argument("--baseline", type=Path, help="older checkpoint to time against")
    parser.add_argument(
        "--ablation",
        type=ablation_arg,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="extra checkpoint for the ablation table (repeatable)",
    )
    parser.add_argument(
        "--ablation-from",
        type=Path,
        help="keep the ablation rows of an earlier results.json (their checkpoints need not exist)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data(),
        help="shared data root with vifb/, vifb_methods/, llvip_sample/ "
        "(default: $FUSION_SHARED_DATA or ../shared/data beside the repo)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="score for counting boxes per VIFB scene and for drawn boxes (default %(default)s)",
    )
    parser.add_argument(
        "--ap-score-threshold",
        type=float,
        default=AP_SCORE_THRESHOLD,
        help="engine score threshold for AP (default %(default)s, fusion-eval's default)",
    )
    parser.add_argument("--synthetic-scenes", type=int, default=100, help="night scenes for mAP50")
    parser.add_argument("--timing-runs", type=int, default=30, help="timed engine.infer calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, help="torch/OpenCV threads (default: torch's)")
    parser.add_argument(
        "--limit", type=int, help="at most N pairs/scenes per section (quick checks and tests)"
    )
    return parser


# ---------------------------------------------------------------- inputs


def vifb_names(data: Path, limit: int | None) -> list[str]:
    try:
        return benchmark.vifb_pairs(data, limit)
    except FileNotFoundError as error:
        raise SystemExit(f"real_imagery: {error}") from None


def load_vifb(data: Path, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pair -> (visible RGB uint8, infrared grey uint8), read the way fusion-infer reads them."""
    return benchmark.load_sources(data, names)


def llvip_dataset(data: Path):
    root = data / "llvip_sample" / "LLVIP"
    if not root.is_dir():
        raise SystemExit(f"real_imagery: LLVIP sample not found at {root}")
    return build_dataset("llvip", root, split="train")


def shown(path: Path) -> str:
    """A path as the report prints it: relative to the repository (no build-machine paths)."""
    return os.path.relpath(path.resolve(), REPO)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ---------------------------------------------------------------- scoring


def score_references(
    data: Path, images: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, benchmark.MethodScores]:
    """The published methods' fused images and the pixel baselines, scored like ours."""
    scores = benchmark.score_published(data, images, (PRESET,), baselines=True, progress=True)
    return scores[PRESET]


def score_vifb_model(
    engine: FusionEngine, images: dict[str, tuple[np.ndarray, np.ndarray]], label: str
) -> tuple[benchmark.MethodScores, dict[str, int], dict[str, np.ndarray]]:
    """Our fusion metrics, boxes per scene at the engine's threshold, and the fused lumas."""
    boxes, fused = {}, {}
    for pair, (rgb, ir) in tqdm(images.items(), desc=f"VIFB {label}", unit="pair"):
        result = engine.infer(rgb, ir.astype(np.float32) / 255.0)
        boxes[pair] = len(result.detections)
        fused[pair] = result.fused_luma
    return benchmark.score_images(fused, images, PRESET), boxes, fused


def box_summary(boxes: dict[str, int]) -> dict[str, Any]:
    counts = list(boxes.values())
    worst = max(counts)
    return {
        "per_pair": boxes,
        "mean": statistics.fmean(counts),
        "max": worst,
        "max_pair": max(boxes, key=boxes.get),
        "floor_max": MAX_BOXES_PER_SCENE,
        "pass": worst <= MAX_BOXES_PER_SCENE,
    }


def llvip_operating_point(
    checkpoint: Path, dataset, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """People found at the report's score threshold (raw and, if fitted, calibrated scores):
    what a user of the default threshold gets, which AP does not say."""
    raw_engine = FusionEngine(
        checkpoint, device="cpu", score_threshold=0.001, warmup=0, calibrated_scores=False
    )
    calibration = raw_engine.checkpoint.score_calibration
    boxes = score_boxes(raw_engine, dataset, limit=args.limit)
    kinds = {"raw": boxes.scores}
    if calibration is not None:
        kinds["calibrated"] = calibration.apply(torch.as_tensor(boxes.scores)).numpy()
    out = {}
    for kind, scores in kinds.items():
        kept = scores >= args.score_threshold
        found = int(boxes.correct[kept].sum())
        out[kind] = {
            "boxes": int(kept.sum()),
            "correct": found,
            "recall": found / max(1, boxes.objects),
            "precision": found / max(1, int(kept.sum())),
        }
    return out


def score_llvip(checkpoint: Path, dataset, args: argparse.Namespace) -> dict[str, Any]:
    """Person AP on the LLVIP sample through evaluate_checkpoint (classes matched by name)."""
    results = evaluate_checkpoint(
        checkpoint,
        dataset,
        device="cpu",
        score_threshold=args.ap_score_threshold,
        limit=args.limit,
        progress=True,
    )
    detection = results["detection"]
    ap50 = detection["per_class"]["person"]
    return {
        "at_threshold": llvip_operating_point(checkpoint, dataset, args),
        "person_AP50": ap50,
        # rotated (obb) checkpoints are scored with VOC AP50 only
        "person_AP50_95": detection.get("per_class_50_95", {}).get("person", math.nan),
        "images": results["meta"]["images"],
        "objects": results["meta"]["objects"],
        "score_threshold": args.ap_score_threshold,
        "fusion": results["fusion"],
        "floor_AP50": LLVIP_AP50_FLOOR,
        "pass": bool(ap50 >= LLVIP_AP50_FLOOR),
    }


def score_synthetic(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Night-only synthetic scenes as `fusion-eval --format synthetic` builds them."""
    loaded = load_checkpoint(checkpoint)
    width, height = loaded.input_size
    scenes = args.synthetic_scenes if args.limit is None else min(args.limit, args.synthetic_scenes)
    dataset = build_dataset(
        "synthetic",
        length=scenes,
        width=width,
        height=height,
        classes=loaded.class_names,
        rotated=loaded.model_config.detection_head.rotated,
        seed=SYNTHETIC_SEED,
        night_probability=1.0,
    )
    results = evaluate_checkpoint(
        loaded, dataset, device="cpu", score_threshold=args.ap_score_threshold, progress=True
    )
    detection = results["detection"]
    map50 = detection.get("mAP50", detection.get("AP50"))
    return {
        "mAP50": map50,
        "mAP50_95": detection.get("mAP50_95"),
        "per_class_AP50": detection["per_class"],
        "scenes": scenes,
        "seed": SYNTHETIC_SEED,
        "night_probability": 1.0,
        "size": [width, height],
        "floor_mAP50": NIGHT_MAP50_FLOOR,
        "pass": bool(map50 >= NIGHT_MAP50_FLOOR),
    }


def floor_checks(means: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {
        name: {"value": means[name], "floor": floor, "pass": bool(means[name] > floor)}
        for name, floor in VIFB_FLOORS.items()
    }


def calibration_lines(
    calibration: dict[str, Any] | None, threshold: float, figure: str | None
) -> list[str]:
    """What the scores of section 2 mean: the checkpoint's score calibration, if it has one."""
    if calibration is None:
        return ["Scores are the head's raw scores (the checkpoint has no score calibration).", ""]
    fit = calibration["fitted_on"]
    lines = [
        f"Scores are calibrated: `fusion-calibrate` fitted sigmoid({calibration['slope']:.3f} * "
        f"logit(raw) {calibration['offset']:+.3f}) on the {fit.get('split')} split of "
        f"`{fit.get('data')}` ({fit.get('images')} images, {fit.get('boxes')} boxes, "
        f"{fit.get('correct')} correct at IoU {fit.get('iou')}), so a box's score estimates the "
        f"chance it is a correct detection; score {threshold:g} is raw "
        f"{calibration['raw_threshold']:.3f}. The map is monotone: AP and ranking are those of "
        "the raw scores.",
        "",
    ]
    if figure is not None:  # written by fusion-calibrate --figure
        lines += [f"![Reliability of the raw and calibrated scores]({figure})", ""]
    return lines


def score_model(
    checkpoint: Path,
    label: str,
    images: dict[str, tuple[np.ndarray, np.ndarray]],
    llvip,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every per-checkpoint measure of the report (the ablation table's row)."""
    engine = FusionEngine(checkpoint, device="cpu", score_threshold=args.score_threshold)
    vifb, boxes, fused = score_vifb_model(engine, images, label)
    means = vifb.means
    return {
        "checkpoint": shown(checkpoint),
        "sha256": file_digest(checkpoint),
        "input_size": list(engine.input_size),
        "classes": list(engine.class_names),
        "score_calibration": None
        if engine.score_calibration is None
        else {
            **engine.score_calibration.to_dict(),
            "raw_threshold": engine.score_calibration.raw_threshold(args.score_threshold),
        },
        "vifb": {
            "means": means,
            "per_pair": vifb.per_pair,
            "non_finite": vifb.non_finite,
            "floors": floor_checks(means),
        },
        "boxes": box_summary(boxes),
        "llvip": score_llvip(checkpoint, llvip, args),
        "synthetic_night": score_synthetic(checkpoint, args),
        "_engine": engine,
        "_fused": fused,
    }


def time_forward(checkpoints: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Median engine forward time on one synthetic 640x512 pair, the models interleaved."""
    engines = {
        label: FusionEngine(path, device="cpu", score_threshold=args.score_threshold, warmup=0)
        for label, path in checkpoints.items()
    }
    scene = SceneGenerator(*TIMING_SIZE, seed=0).sample(0)
    thermal = scene.thermal_raw.astype(np.float32) / 16383.0
    for _ in range(args.warmup):
        for engine in engines.values():
            engine.infer(scene.rgb, thermal)
    forward: dict[str, list[float]] = {label: [] for label in engines}
    total: dict[str, list[float]] = {label: [] for label in engines}
    for _ in tqdm(range(args.timing_runs), desc="timing", unit="round"):
        for label, engine in engines.items():
            result = engine.infer(scene.rgb, thermal)
            _ = result.fused_luma  # made on first use: timed as part of inference
            timings = result.timings_ms
            forward[label].append(timings["forward"])
            total[label].append(sum(timings.values()))
    out: dict[str, Any] = {
        "size": list(TIMING_SIZE),
        "runs": args.timing_runs,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "models": {
            label: {
                "checkpoint": shown(checkpoints[label]),
                "input_size": list(engine.input_size),
                "parameters": sum(p.numel() for p in engine.model.parameters()),
                "forward_ms_median": statistics.median(forward[label]),
                "infer_ms_median": statistics.median(total[label]),
            }
            for label, engine in engines.items()
        },
    }
    if "baseline" in out["models"]:
        models = out["models"]
        out["ratio_forward"] = (
            models["checkpoint"]["forward_ms_median"] / models["baseline"]["forward_ms_median"]
        )
        out["ratio_infer"] = (
            models["checkpoint"]["infer_ms_median"] / models["baseline"]["infer_ms_median"]
        )
    return out


# ---------------------------------------------------------------- figures


def tile(image: np.ndarray, width: int = TILE_WIDTH) -> np.ndarray:
    """RGB uint8 (grey becomes RGB) resized to `width`."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def scaled(detections: Detections, factor: float) -> Detections:
    boxes = detections.boxes.copy()
    boxes[:, :4] *= factor
    return Detections(boxes, detections.scores, detections.labels)


def save_strip(rows: list[list[np.ndarray]], headers: Sequence[str], path: Path) -> None:
    """Rows of equal-width RGB tiles under a header band with the column names; PNG."""
    band = np.full((28, TILE_WIDTH * len(headers), 3), 255, np.uint8)
    for i, text in enumerate(headers):
        cv2.putText(
            band, text, (i * TILE_WIDTH + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1
        )
    lines = [band]
    for tiles in rows:
        height = max(t.shape[0] for t in tiles)
        padded = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, 0) for t in tiles]
        lines += [cv2.hconcat(padded), np.full((3, band.shape[1], 3), 255, np.uint8)]
    strip = cv2.vconcat(lines[:-1])
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def llvip_names(dataset, limit: int | None) -> list[str]:
    """The first four pairs by name, the last replaced by 010005 when the sample has it."""
    stems = sorted(record.image_id for record in dataset.records)[:limit]
    chosen = stems[:4]
    if LLVIP_STRIP_FIXED in stems and LLVIP_STRIP_FIXED not in chosen:
        chosen = [*chosen[:3], LLVIP_STRIP_FIXED]
    return chosen


def llvip_strip(engine: FusionEngine, dataset, names: Sequence[str], path: Path) -> None:
    index = {record.image_id: i for i, record in enumerate(dataset.records)}
    rows = []
    for name in tqdm(names, desc="LLVIP strip", unit="pair"):
        item = dataset[index[name]]
        result = engine.infer(item["rgb"], item["thermal"])
        fused = tile(result.fused_rgb(item["rgb"]))
        factor = TILE_WIDTH / item["rgb"].shape[1]
        boxed = draw_detections(fused, scaled(result.detections, factor), engine.class_names)
        thermal = np.round(item["thermal"] * 255).astype(np.uint8)
        rows.append([tile(item["rgb"]), tile(thermal), fused, boxed])
    headers = ("visible", "thermal", "fused (ours)", f"boxes >= {engine.score_threshold:g}")
    save_strip(rows, headers, path)


def vifb_strip(
    data: Path,
    images: dict[str, tuple[np.ndarray, np.ndarray]],
    fused: dict[str, np.ndarray],
    path: Path,
) -> list[str]:
    preferred = [n for n in VIFB_STRIP_PAIRS if n in images]
    names = (preferred + [n for n in sorted(images) if n not in preferred])[:3]
    rows = []
    for name in names:
        rgb, ir = images[name]
        published = read_rgb(data / "vifb_methods" / "fused" / f"{name}_SeAFusion.jpg")
        rows.append(
            [tile(rgb), tile(ir), tile(published), tile(merge_fused_luma(fused[name], rgb))]
        )
    save_strip(rows, ("visible", "infrared", "SeAFusion (published)", "ours"), path)
    return names


def bar_plot(means: dict[str, dict[str, float]], ours: str, path: Path) -> None:
    """Qabf, VIF and AG per method, ours highlighted, the floors dashed."""
    labels = list(means)
    fig, axes = plt.subplots(1, len(VIFB_FLOORS), figsize=(12, 3.8))
    for ax, (metric, floor) in zip(axes, VIFB_FLOORS.items(), strict=True):
        values = [means[m][metric] for m in labels]
        colours = ["tab:red" if m == ours else "tab:grey" for m in labels]
        ax.bar(range(len(labels)), values, color=colours)
        ax.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"floor {floor:g}")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.suptitle("VIFB: fusion metrics per method (textbook conventions, higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- report


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def report(results: dict[str, Any], ours: str) -> list[str]:
    main = results["models"][0]
    vifb = results["vifb"]
    pairs = vifb["pairs"]
    lines = [
        "# The shipped model on real imagery",
        "",
        f"Made by `tools/real_imagery.py` on {results['date']} in {results['runtime_s']:.0f} s:",
        "",
        "```",
        results["command"],
        "```",
        "",
        f"Checkpoint `{main['checkpoint']}` (sha256 {main['sha256']}…, network input "
        f"{main['input_size'][0]}x{main['input_size'][1]}, classes {', '.join(main['classes'])}). "
        f"Machine: {results['machine']}. All numbers are in `real_imagery/results.json`. "
        "VIFB and the LLVIP sample are held apart from training (evaluation only).",
        "",
    ]
    if results["limit"] is not None:
        lines += [f"**Partial run: at most {results['limit']} pairs/scenes per section.**", ""]
    header = ["method", *METRICS]
    lines += [
        f"## 1. Fusion on VIFB ({len(pairs)} pairs)",
        "",
        f"Means over the pairs of `fusion_training.metrics.fusion.evaluate_fusion` (preset "
        f"`{PRESET}`), each fused image scored against the visible image's luma and the infrared. "
        "Ours: `FusionEngine.infer` (the `fusion-infer` path; fused luma at the visible camera's "
        "resolution). Published methods: VIFB's fused images, scored by the same code "
        "(`fusion_training.benchmark`, as `fusion-eval --benchmark vifb` ranks them). Pixel "
        "average / max: of the visible luma and the infrared, computed here.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for method, means in vifb["means"].items():
        name = f"**{method}**" if method == ours else method
        lines.append(f"| {name} | " + " | ".join(fmt(means[m]) for m in METRICS) + " |")
    lines += ["", "Floors for our model (must be exceeded):", ""]
    for metric, check in main["vifb"]["floors"].items():
        lines.append(
            f"- {metric} = {fmt(check['value'])} > {check['floor']:g}: {verdict(check['pass'])}"
        )
    lines += ["", "![Qabf, VIF and AG per method](real_imagery/vifb_metrics.png)", ""]
    boxes = main["boxes"]
    lines += [
        f"## 2. Boxes per VIFB scene (score >= {results['score_threshold']:g})",
        "",
        f"Mean {boxes['mean']:.2f}, max {boxes['max']} ({boxes['max_pair']}) over {len(pairs)} "
        f"pairs; floor at most {boxes['floor_max']} per pair: {verdict(boxes['pass'])}.",
        "",
        "| pair | " + " | ".join(boxes["per_pair"]) + " |",
        "|---|" + "---:|" * len(boxes["per_pair"]),
        "| boxes | " + " | ".join(str(n) for n in boxes["per_pair"].values()) + " |",
        "",
    ]
    lines += calibration_lines(
        main.get("score_calibration"), results["score_threshold"], results["calibration_figure"]
    )
    llvip = main["llvip"]
    lines += [
        "## 3. Person detection on LLVIP night pairs",
        "",
        f"`fusion_training.evaluate.evaluate_checkpoint` on the LLVIP sample "
        f"({llvip['images']} pairs, {llvip['objects']} people; engine score threshold "
        f"{llvip['score_threshold']:g}; COCO-style AP, classes matched by name):",
        "",
        "| class | AP50 | AP50:95 |",
        "|---|---:|---:|",
        f"| person | {fmt(llvip['person_AP50'])} | {fmt(llvip['person_AP50_95'])} |",
        "",
        f"Floor AP50 >= {llvip['floor_AP50']:g}: {verdict(llvip['pass'])}. Fusion on these pairs "
        f"(same evaluation): Qabf {fmt(llvip['fusion']['Qabf'])}, VIF "
        f"{fmt(llvip['fusion']['VIF'])}, AG {fmt(llvip['fusion']['AG'])}.",
        "",
    ]
    if "at_threshold" in llvip:  # rows scored before this measure have none
        lines += [
            f"At score >= {results['score_threshold']:g} (the node's default), boxes matched "
            "to people at IoU 0.5 (person boxes only: LLVIP labels no other class):",
            "",
            "| scores | boxes | people found | recall | precision |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, row in llvip["at_threshold"].items():
            lines.append(
                f"| {kind} | {row['boxes']} | {row['correct']} of {llvip['objects']} | "
                f"{fmt(row['recall'])} | {fmt(row['precision'])} |"
            )
        lines.append("")
    lines += [
        "## 4. Night scenes",
        "",
        f"LLVIP pairs {', '.join(results['strips']['llvip'])}: visible, thermal, our fused image "
        f"(computed at the camera's resolution, shown scaled down) and its boxes at score >= "
        f"{results['score_threshold']:g}.",
        "",
        "![LLVIP night pairs](real_imagery/llvip_night.png)",
        "",
        f"VIFB pairs {', '.join(results['strips']['vifb'])}: the published SeAFusion output "
        "beside ours.",
        "",
        "![VIFB pairs, SeAFusion and ours](real_imagery/vifb_strip.png)",
        "",
    ]
    night = main["synthetic_night"]
    lines += [
        "## 5. Synthetic night scenes",
        "",
        f"{night['scenes']} night scenes at {night['size'][0]}x{night['size'][1]}, seed "
        f"{night['seed']}, as `fusion-eval --format synthetic --night-probability 1.0 --seed "
        f"{night['seed']} --limit {night['scenes']}` builds them: mAP50 **{fmt(night['mAP50'])}** "
        f"(mAP50:95 {fmt(night['mAP50_95'])}; "
        + ", ".join(f"{c} {fmt(v)}" for c, v in night["per_class_AP50"].items())
        + f"). Floor mAP50 >= {night['floor_mAP50']:g}: {verdict(night['pass'])}.",
        "",
    ]
    timing = results["timing"]
    lines += [
        f"## 6. Forward time at {timing['size'][0]}x{timing['size'][1]} on this CPU",
        "",
        f"Median of {timing['runs']} `FusionEngine.infer` calls per model on one synthetic "
        f"640x512 pair after {timing['warmup']} warm-up calls, the models interleaved in one run, "
        f"{timing['threads']} torch thread(s). The engine letterboxes to the network input.",
        "",
        "| model | checkpoint | network input | parameters | forward ms | whole infer ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label, m in timing["models"].items():
        lines.append(
            f"| {label} | `{m['checkpoint']}` | {m['input_size'][0]}x{m['input_size'][1]} | "
            f"{m['parameters']:,} | {m['forward_ms_median']:.1f} | {m['infer_ms_median']:.1f} |"
        )
    if "ratio_forward" in timing:
        lines += [
            "",
            f"Checkpoint / baseline: forward **{timing['ratio_forward']:.2f}x**, whole infer "
            f"{timing['ratio_infer']:.2f}x.",
        ]
    lines.append("")
    if len(results["models"]) > 1:
        lines += [
            "## 7. Ablation",
            "",
            "Each checkpoint scored by the same functions as above; the first row is the "
            "checkpoint of this report; rows marked 'scored' come from an earlier run of this "
            "tool (--ablation-from).",
            "",
            "| name | VIFB Qabf | VIFB VIF | VIFB AG | LLVIP person AP50 | synthetic night mAP50 "
            "| boxes/scene mean | boxes/scene max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["models"]:
            means = row["vifb"]["means"]
            when = f" (scored {row['reused_from']})" if "reused_from" in row else ""
            lines.append(
                f"| {row['name']}{when} | {fmt(means['Qabf'])} | {fmt(means['VIF'])} | "
                f"{fmt(means['AG'])} | {fmt(row['llvip']['person_AP50'])} | "
                f"{fmt(row['synthetic_night']['mAP50'])} | {row['boxes']['mean']:.2f} | "
                f"{row['boxes']['max']} |"
            )
        lines.append("")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("real_imagery: --limit must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    started = time.perf_counter()
    figures = args.out / "real_imagery"
    figures.mkdir(parents=True, exist_ok=True)

    names = vifb_names(args.data, args.limit)
    images = load_vifb(args.data, names)
    llvip = llvip_dataset(args.data)
    ours = f"ours ({args.checkpoint.name})"
    models = [score_model(args.checkpoint, ours, images, llvip, args)]
    models[0]["name"] = ours
    for name, path in args.ablation:
        models.append(score_model(path, name, images, llvip, args))
        models[-1]["name"] = name
    if args.ablation_from is not None:
        earlier = json.loads(args.ablation_from.read_text(encoding="utf-8"))
        for row in earlier["models"][1:]:
            models.append({"reused_from": earlier["date"], **row})  # keeps the first date
    references = score_references(args.data, images)
    means = {ours: models[0]["vifb"]["means"]}
    means.update({method: scores.means for method, scores in references.items()})

    engine = models[0]["_engine"]
    bar_plot(means, ours, figures / "vifb_metrics.png")
    strip_llvip = llvip_names(llvip, args.limit)
    llvip_strip(engine, llvip, strip_llvip, figures / "llvip_night.png")
    strip_vifb = vifb_strip(args.data, images, models[0]["_fused"], figures / "vifb_strip.png")

    timed = {"checkpoint": args.checkpoint}
    if args.baseline is not None:
        timed["baseline"] = args.baseline
    timing = time_forward(timed, args)

    for model in models:
        model.pop("_engine", None)
        model.pop("_fused", None)
    results = {
        "command": shlex.join([".venv/bin/python", "tools/real_imagery.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "data": shown(args.data),
        "limit": args.limit,
        "score_threshold": args.score_threshold,
        "vifb": {
            "pairs": names,
            "means": means,
            "per_pair": {method: scores.per_pair for method, scores in references.items()},
        },
        "models": models,
        "strips": {"llvip": strip_llvip, "vifb": strip_vifb},
        "timing": timing,
        "calibration_figure": "real_imagery/score_calibration.png"
        if (figures / "score_calibration.png").is_file()
        else None,
    }
    results["runtime_s"] = time.perf_counter() - started
    text = report(results, ours)
    (figures / "results.json").write_text(
        json.dumps(json_ready(results), indent=1, allow_nan=False)
    )
    (args.out / "real_imagery.md").write_text("\n".join(text), encoding="utf-8")
    print("\n".join(text))
    print(f"real_imagery: wrote {args.out / 'real_imagery.md'} and {figures}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
