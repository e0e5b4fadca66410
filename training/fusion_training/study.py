"""The multitask and modality study (docs/mtl_study.md): what UnityGrad and fusion buy, on a CPU.

Two questions, answered on synthetic day and night scenes with the nano model:

1. Multitask methods: the same network, data and step budget trained with weighted sum,
   UnityGrad, PCGrad, CAGrad and GradNorm; both tasks' metrics on one validation set, and each
   method's optimisation step time as a ratio of the weighted-sum step, measured in this run.
2. The value of fusion: detection mAP50 on night-only (and day-only) scenes of a model that sees
   both cameras, against models trained and evaluated with only the RGB or only the thermal camera
   (the other input blanked, the way modality dropout blanks it).

Run with ``python -m fusion_training.study --out docs`` (``make study``). The numbers are from
short CPU runs on synthetic data: they rank the methods under one budget; they are not the
paper's results on M3FD or DroneVehicle.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_training.config import load_training_config
from fusion_training.datasets.synthetic_scenes import SyntheticDataset
from fusion_training.evaluate import blank_modality, evaluate_checkpoint
from fusion_training.trainer import Trainer

BASE_CONFIG = Path("config/training/synthetic_nano.yaml")  # relative to the repository root
FUSION_METRICS = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM", "SCD")
# (label, mtl.method, mtl.update_every); weighted sum never measures per-task gradients.
METHODS = (
    ("weighted_sum", "weighted_sum", 0),
    ("unitygrad", "unitygrad", 1),
    ("pcgrad", "pcgrad", 1),
    ("cagrad", "cagrad", 1),
    ("gradnorm", "gradnorm", 1),
)
# Modality runs (name, label, the input the model never sees: blanked in training and evaluation).
MODALITIES = (
    ("fused", "fused (RGB + thermal)", None),
    ("rgb_only", "RGB only", "thermal"),
    ("thermal_only", "thermal only", "rgb"),
)


@dataclass(frozen=True)
class StudySettings:
    """Budget of every run; the defaults take about 25 minutes on 2 CPU cores."""

    config: Path = BASE_CONFIG
    train_length: int = 512
    epochs: int = 12
    val_length: int = 48
    night_length: int = 48
    seed: int = 0
    device: str = "cpu"
    methods: Sequence[tuple[str, str, int]] = METHODS
    modalities: Sequence[tuple[str, str, str | None]] = MODALITIES
    # Every modality run uses this method (a label of `methods`), so only the cameras differ.
    modality_method: str = "weighted_sum"


@dataclass
class RunResult:
    label: str  # the run's name, also its folder
    metrics: dict[str, float]
    step_ms: float
    checkpoint: Path
    log: list[dict[str, float]] = field(default_factory=list)


def _overrides(settings: StudySettings, out: Path, method: str, every: int, blank: str | None):
    augment = {"rgb_pad": 0, "crop_probability": 0.3}
    if blank is not None:  # always drop the same modality: a single-camera model
        augment |= {"dropout_probability": 1.0, "dropout_rgb_share": float(blank == "rgb")}
    return {
        "mtl.method": method,
        "mtl.update_every": every,
        "mtl.options": {},
        "augment.options": augment,
        "dataset.train": {"length": settings.train_length, "seed": settings.seed},
        "dataset.val": {"length": settings.val_length, "seed": settings.seed + 1000},
        "epochs": settings.epochs,
        "eval.every": settings.epochs,
        "eval.fusion_metrics": list(FUSION_METRICS),
        "eval.fusion_images": settings.val_length,
        "seed": settings.seed,
        "device": settings.device,
        "progress": False,
        "log_every": 1,
        "output_dir": str(out),
    }


def train_one(
    settings: StudySettings, workdir: Path, label: str, method: str, every: int, blank: str | None
) -> RunResult:
    out = workdir / label
    shutil.rmtree(out, ignore_errors=True)  # a study always trains from scratch
    config = load_training_config(settings.config, _overrides(settings, out, method, every, blank))
    result = Trainer(config).fit()
    with (out / "train_log.csv").open() as stream:
        log = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(stream)]
    warm = log[min(10, len(log) // 4) :] or log
    step_ms = 1e3 * statistics.median(row["step_time_s"] for row in warm)
    return RunResult(label, dict(result.metrics), step_ms, result.last_checkpoint, log)


def scene_map50(checkpoint: Path, settings: StudySettings, night: bool, blank: str | None) -> float:
    config = load_training_config(settings.config)
    width, height = config.input_size
    dataset = SyntheticDataset(
        settings.night_length,
        width=width,
        height=height,
        classes=tuple(config.classes),
        seed=settings.seed + (3000 if night else 4000),
        night_probability=1.0 if night else 0.0,
        max_objects=int(config.dataset.options.get("max_objects", 6)),
        transform=blank_modality(blank),
    )
    result = evaluate_checkpoint(checkpoint, dataset, device=settings.device)
    return float(result["detection"]["mAP50"])


def run_study(settings: StudySettings, workdir: Path) -> dict[str, Any]:
    chosen = {label: (method, every) for label, method, every in settings.methods}
    if settings.modality_method not in chosen:
        raise ValueError(
            f"modality_method: {settings.modality_method!r} is not one of the study's methods "
            f"{list(chosen)}"
        )
    methods = [
        train_one(settings, workdir / "methods", label, method, every, None)
        for label, method, every in settings.methods
    ]
    method, every = chosen[settings.modality_method]
    fused = next(r for r in methods if r.label == settings.modality_method)
    modalities = []
    for name, label, blank in settings.modalities:
        if blank is None:
            run = fused
        else:
            run = train_one(settings, workdir / "modalities", name, method, every, blank)
        modalities.append(
            {
                "label": label,
                "night_mAP50": scene_map50(run.checkpoint, settings, True, blank),
                "day_mAP50": scene_map50(run.checkpoint, settings, False, blank),
            }
        )
    return {"methods": methods, "modalities": modalities}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    ax = axes[0]
    for run in methods:
        steps = [row["step"] for row in run.log]
        total = [row["loss/total"] for row in run.log]
        ax.plot(steps, _smooth(total), lw=1.2, label=run.label)
    ax.set(xlabel="step", ylabel="training loss (smoothed)", title="Training loss", yscale="log")
    ax.legend(fontsize=8)
    ax = axes[1]
    for run in methods:
        ax.scatter(run.metrics.get("fusion/SSIM", float("nan")), run.metrics["mAP50"], s=40)
        ax.annotate(run.label, (run.metrics.get("fusion/SSIM", 0.0), run.metrics["mAP50"]))
    ax.set(xlabel="fusion SSIM (sum over sources)", ylabel="detection mAP50", title="Both tasks")
    ax.grid(alpha=0.3)
    ax = axes[2]
    labels = [m["label"] for m in results["modalities"]]
    x = range(len(labels))
    ax.bar(
        [i - 0.2 for i in x], [m["night_mAP50"] for m in results["modalities"]], 0.4, label="night"
    )
    ax.bar([i + 0.2 for i in x], [m["day_mAP50"] for m in results["modalities"]], 0.4, label="day")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set(ylabel="mAP50", title="Which cameras the model sees")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


GRADIENT_COLUMNS = (
    "grad_norm/fusion",
    "grad_norm/detection",
    "cos/fusion-detection",
    "alpha/fusion",
    "alpha/detection",
)


def _median(log: list[dict[str, float]], key: str) -> float:
    values = [row[key] for row in log if key in row and math.isfinite(row[key])]
    return statistics.median(values) if values else math.nan


def _smooth(values: list[float], window: int = 15) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def report(results: dict[str, Any], settings: StudySettings, figure: str, machine: str) -> str:
    methods = results["methods"]
    base = next((r.step_ms for r in methods if r.label == "weighted_sum"), methods[0].step_ms)
    steps = int(max(row["step"] for row in methods[0].log))
    recipe = load_training_config(settings.config)
    (width, height), batch = recipe.input_size, recipe.batch_size
    lines = [
        "# Multitask methods and the value of fusion (synthetic scenes, CPU)",
        "",
        f"Produced by `python -m fusion_training.study` on {time.strftime('%Y-%m-%d')}. {machine}.",
        f"Every run: `{settings.config}` (UniFusOD nano at {width}x{height}, batch {batch}), "
        f"{settings.train_length} training scenes "
        f"(half at night), {settings.epochs} epochs ({steps} steps), seed {settings.seed}; "
        f"validation on {settings.val_length} unseen scenes. Short runs on synthetic data: they "
        "compare methods under one budget, they are not the paper's numbers.",
        "",
        f"![study]({figure})",
        "",
        "## Multitask methods (same network, data and steps)",
        "",
        "| method | mAP50 | mAP50:95 | " + " | ".join(FUSION_METRICS) + " | step ms | step / WS |",
        "|---|---|---|" + "---|" * len(FUSION_METRICS) + "---|---|",
    ]
    for run in methods:
        m = run.metrics
        fusion = " | ".join(f"{m.get('fusion/' + k, float('nan')):.3f}" for k in FUSION_METRICS)
        lines.append(
            f"| {run.label} | {m['mAP50']:.3f} | {m['mAP50_95']:.3f} | {fusion} | "
            f"{run.step_ms:.0f} | {run.step_ms / base:.2f} |"
        )
    lines += [
        "",
        "Step time is the trainer's own per-step time (forward, the method's backward passes and "
        "solve, optimiser step; data loading excluded), median after warm-up, all runs in one "
        "process. Weighted sum runs one backward pass; UnityGrad, PCGrad, CAGrad and GradNorm need "
        "each task's gradient on the shared parameters (two backward passes) every step here; "
        "`mtl.update_every: 5` reuses UnityGrad's α in between (see docs/benchmarks.md).",
        "",
        "### Task gradients on the shared parameters (median over the run's steps)",
        "",
        "| method | ‖g fusion‖ | ‖g detection‖ | cos(g fusion, g detection) | α fusion | α detection |",
        "|---|---|---|---|---|---|",
    ]
    for run in methods:
        stats = {key: _median(run.log, key) for key in GRADIENT_COLUMNS}
        if math.isnan(stats["grad_norm/fusion"]):
            continue  # weighted sum does not measure per-task gradients
        lines.append(
            f"| {run.label} | " + " | ".join(f"{stats[key]:.4g}" for key in GRADIENT_COLUMNS) + " |"
        )
    lines += [
        "",
        "## Which cameras the model sees (detection mAP50)",
        "",
        "| model | night scenes | day scenes |",
        "|---|---|---|",
    ]
    for m in results["modalities"]:
        lines.append(f"| {m['label']} | {m['night_mAP50']:.3f} | {m['day_mAP50']:.3f} |")
    lines += [
        "",
        f"{settings.night_length} night-only and {settings.night_length} day-only scenes, never "
        "seen in training. The single-camera models are trained with the other camera always "
        "blanked (modality dropout with probability 1) and evaluated the same way; all three "
        f"train with `{settings.modality_method}` and the fused model is that run above. At night "
        "people are nearly invisible in the synthetic "
        "RGB image but hot in thermal; by day the RGB image carries colour and texture that "
        "thermal lacks.",
        "",
    ]
    return "\n".join(lines)


def machine_line() -> str:
    import os
    import platform

    import torch

    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion-study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of the report")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/study"),
        help="scratch folder of the training runs (earlier study runs in it are replaced)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=BASE_CONFIG,
        help="training recipe every run starts from (default: %(default)s)",
    )
    parser.add_argument("--train-length", type=int, default=StudySettings.train_length)
    parser.add_argument("--epochs", type=int, default=StudySettings.epochs)
    parser.add_argument("--val-length", type=int, default=StudySettings.val_length)
    parser.add_argument("--night-length", type=int, default=StudySettings.night_length)
    parser.add_argument("--seed", type=int, default=StudySettings.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--modality-method",
        default=StudySettings.modality_method,
        help="method the fused and single-camera models train with (one of --methods)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(label for label, _, _ in METHODS),
        help="comma-separated subset of the multitask methods (default: all)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    known = {label: (label, method, every) for label, method, every in METHODS}
    chosen = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"--methods: unknown {unknown}; choose from {list(known)}")
    if args.modality_method not in chosen:
        parser.error(f"--modality-method: {args.modality_method!r} is not in --methods {chosen}")
    settings = StudySettings(
        config=args.config,
        train_length=args.train_length,
        epochs=args.epochs,
        val_length=args.val_length,
        night_length=args.night_length,
        seed=args.seed,
        device=args.device,
        methods=tuple(known[name] for name in chosen),
        modality_method=args.modality_method,
    )
    started = time.monotonic()
    results = run_study(settings, args.workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "mtl_study.png")
    text = report(results, settings, "mtl_study.png", machine_line())
    (args.out / "mtl_study.md").write_text(text, encoding="utf-8")
    raw = {
        "methods": [
            {"label": r.label, "metrics": r.metrics, "step_ms": r.step_ms}
            for r in results["methods"]
        ],
        "modalities": results["modalities"],
    }
    (args.out / "mtl_study.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    print(text)
    print(f"fusion-study: {args.out / 'mtl_study.md'} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
