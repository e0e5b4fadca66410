"""The multitask study (docs/mtl_study.md): does UnityGrad beat a plain weighted sum?

Every arm (a training set-up: method, λ, head, data) trains from scratch once per seed, and every
run is scored on data it never saw: fusion on the 21 held-apart VIFB pairs (textbook metrics),
detection on a fixed synthetic night set and on the 50-pair LLVIP sample. The weighted-sum λ sweep
draws the trade-off front; UnityGrad counts as a win only beyond that front by more than the seed
spread (`fusion_training.study_report`).

Two data set-ups: ``synthetic`` (the nano network on synthetic day/night scenes) and ``real``
(ImageNet Lite0 on the real training pairs of ``fusion-prepare-real`` + synthetic scenes, the
shipped model's recipe at a smaller size and budget). The held-apart sets are never used to train
or to choose: the real arms' "best λ" comes from the synthetic sweep's *validation* scores.

Resumable: each (arm, seed) result is a JSON file under ``docs/mtl_study_runs/`` with the
fingerprint of its full training configuration; a rerun trains only what is missing or stale,
so the study runs in parts (``--time-budget-min``) on a 2-core machine, or at once on a GPU.

    python -m fusion_training.study --out docs            # make study
    python -m fusion_training.study --report-only         # redraw from the cached runs
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from fusion_perception.schema import json_safe, to_plain
from fusion_training.config import TrainingConfig, load_training_config
from fusion_training.datasets.synthetic_scenes import SyntheticDataset
from fusion_training.evaluate import blank_modality, evaluate_checkpoint
from fusion_training.trainer import Trainer

# Bump when the held-apart evaluation changes: every cached result becomes stale.
EVAL_VERSION = 1
# Config sections added after runs were cached (left out of the fingerprint at their defaults).
LATER_SECTIONS = ("tardal", "tsjnet")
VIFB_METRICS = ("Qabf", "VIF", "SSIM", "MI", "AG", "SF", "EN", "SD", "SCD")
VAL_FUSION_METRICS = ("Qabf", "SSIM", "MI", "AG")  # on the validation split (choosing λ)
NIGHT_SCENES = 48  # the fixed synthetic night (and day) evaluation sets, same for every run
# Config paths are relative to the repository (this source checkout, else the working directory).
_CHECKOUT = Path(__file__).resolve().parents[2]
REPO = _CHECKOUT if (_CHECKOUT / "config" / "training").is_dir() else Path.cwd()
NIGHT_SEED, DAY_SEED = 3000, 4000
# Parts of the recipe every synthetic run shares (the trainer's budget and evaluation).
SYNTHETIC_BUDGET = {"train_length": 512, "epochs": 4, "val_length": 48}  # 512 steps
REAL_BUDGET = {"max_steps": 300, "input_size": [160, 128], "batch_size": 4}


@dataclass(frozen=True)
class DataSetup:
    """One training-data set-up of the study: the recipe and the budget every arm on it shares."""

    name: str
    config: Path  # relative to the repository root
    overrides: Callable[[int], dict[str, Any]]  # seed -> the set-up's overrides of the recipe
    description: str


def _synthetic_overrides(seed: int) -> dict[str, Any]:
    budget = SYNTHETIC_BUDGET
    return {
        "dataset.train": {"length": budget["train_length"], "seed": seed},
        "dataset.val": {"length": budget["val_length"], "seed": 1000 + seed},
        "epochs": budget["epochs"],
        "eval.every": budget["epochs"],
        "eval.fusion_images": budget["val_length"],
    }


def _real_overrides(seed: int) -> dict[str, Any]:
    return {
        "input_size": REAL_BUDGET["input_size"],
        "batch_size": REAL_BUDGET["batch_size"],
        "max_steps": REAL_BUDGET["max_steps"],
        "epochs": 100,  # max_steps ends the run
        "eval.every": 100,  # evaluated once, at the end
        "workers": 0,
    }


DATA = {
    "synthetic": DataSetup(
        "synthetic",
        Path("config/training/synthetic_nano.yaml"),
        _synthetic_overrides,
        f"UniFusOD nano at 128x96, batch 4, {SYNTHETIC_BUDGET['train_length']} synthetic scenes "
        f"(half at night) x {SYNTHETIC_BUDGET['epochs']} epochs = 512 steps, validation on "
        f"{SYNTHETIC_BUDGET['val_length']} unseen scenes",
    ),
    "real": DataSetup(
        "real",
        Path("config/training/real_lite0.yaml"),
        _real_overrides,
        "UniFusOD lite0 (ImageNet EfficientNet-Lite0) at 160x128, batch 4, "
        f"{REAL_BUDGET['max_steps']} steps on the real training pairs (RoadScene + TNO, "
        "`fusion-prepare-real`) + synthetic scenes; validation on the RoadScene val pairs + "
        "synthetic val scenes",
    ),
}


@dataclass(frozen=True)
class Arm:
    """One training set-up. λ is ``loss.detection_weight``; ``fixed_from`` names the UnityGrad arm
    whose median α ratio (same seed) sets λ, ``best_lambda`` takes the synthetic sweep's best λ."""

    name: str
    data: str
    method: str
    detection_weight: float = 0.4
    image_skip: bool = True
    fixed_from: str | None = None
    best_lambda: bool = False
    blank: str | None = None  # the camera this model never sees (training and evaluation)
    sweep: bool = False  # a point of the weighted-sum λ sweep (the trade-off front)
    options: tuple[tuple[str, Any], ...] = ()  # further config overrides (an option under test)

    @property
    def update_every(self) -> int:
        return 0 if self.method == "weighted_sum" else 1  # weighted sum measures no gradients

    def depends_on(self, seeds: Sequence[int], seed: int) -> list[tuple[str, int]]:
        """(arm, seed) results this run needs first."""
        if self.fixed_from is not None:
            return [(self.fixed_from, seed)]
        if self.best_lambda:
            return [(arm.name, s) for arm in sweep_arms("synthetic") for s in seeds]
        return []


def _sweep(data: str, prefix: str = "") -> list[Arm]:
    return [
        Arm(f"{prefix}ws_{lam:.2f}", data, "weighted_sum", lam, sweep=True)
        for lam in (0.2, 0.4, 0.6, 0.8, 0.95)
    ]


# Run order = priority (a partial study has the key arms first).
ARMS: tuple[Arm, ...] = (
    Arm("ws_0.40", "synthetic", "weighted_sum", 0.4, sweep=True),
    Arm("unitygrad", "synthetic", "unitygrad"),
    Arm("fixed_alpha", "synthetic", "weighted_sum", fixed_from="unitygrad"),
    *[arm for arm in _sweep("synthetic") if arm.name != "ws_0.40"],
    Arm("real_ws_0.40", "real", "weighted_sum", 0.4),
    Arm("real_unitygrad", "real", "unitygrad"),
    Arm("real_fixed_alpha", "real", "weighted_sum", fixed_from="real_unitygrad"),
    Arm("real_ws_best", "real", "weighted_sum", best_lambda=True),
    Arm("pcgrad", "synthetic", "pcgrad"),
    Arm("cagrad", "synthetic", "cagrad"),
    Arm("gradnorm", "synthetic", "gradnorm"),
    Arm("mgda", "synthetic", "mgda"),
    Arm("noskip_ws_0.40", "synthetic", "weighted_sum", 0.4, image_skip=False),
    Arm("noskip_unitygrad", "synthetic", "unitygrad", image_skip=False),
    Arm(
        "noskip_fixed_alpha",
        "synthetic",
        "weighted_sum",
        image_skip=False,
        fixed_from="noskip_unitygrad",
    ),
    Arm("rgb_only", "synthetic", "weighted_sum", 0.4, blank="thermal"),
    Arm("thermal_only", "synthetic", "weighted_sum", 0.4, blank="rgb"),
)
ARM_BY_NAME = {arm.name: arm for arm in ARMS}
SEEDS = (0, 1, 2)


def sweep_arms(data: str) -> list[Arm]:
    return sorted((a for a in ARMS if a.sweep and a.data == data), key=lambda a: a.detection_weight)


# ----------------------------------------------------------------------------- cache


class StudyRuns:
    """The cached (arm, seed) results of one study: ``<root>/<arm>/seed<k>.json``. A result is
    current when its fingerprint is the configuration a rerun would train (same seeds, budget)."""

    def __init__(
        self,
        root: Path,
        seeds: Sequence[int],
        max_steps: int | None = None,
        eval_limit: int | None = None,
        arms: Mapping[str, Arm] | None = None,
    ) -> None:
        self.root, self.seeds = root, tuple(seeds)
        self.max_steps, self.eval_limit = max_steps, eval_limit
        self.arms = dict(arms or ARM_BY_NAME)

    def path(self, arm: str, seed: int) -> Path:
        return self.root / arm / f"seed{seed}.json"

    def load(self, arm: str, seed: int) -> dict[str, Any] | None:
        path = self.path(arm, seed)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: cached study result is not valid JSON ({error})") from None

    def save(self, result: dict[str, Any]) -> Path:
        path = self.path(result["arm"], result["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        text = json.dumps(json_safe(result), indent=1, sort_keys=True, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)  # never a half-written result
        return path

    def current(self, arm: str, seed: int) -> dict[str, Any] | None:
        """The cached result if a rerun would train exactly it, else None."""
        result = self.load(arm, seed)
        if result is None:
            return None
        try:
            lam = self.detection_weight(self.arms[arm], seed)
        except ValueError:  # what it was derived from is gone or stale
            return None
        config = self.config(self.arms[arm], seed, lam, Path("unused"), "cpu")
        return result if result["fingerprint"] == self.fingerprint(config) else None

    def fingerprint(self, config: TrainingConfig) -> str:
        return fingerprint(config, self.eval_limit)

    def config(self, arm: Arm, seed: int, lam: float, out: Path, device: str) -> TrainingConfig:
        return run_config(arm, seed, lam, out, device, self.max_steps)

    def detection_weight(self, arm: Arm, seed: int) -> float:
        """λ of (arm, seed): its own, UnityGrad's α ratio (same seed) or the sweep's best."""
        if arm.fixed_from is not None:
            source = self.current(arm.fixed_from, seed)
            if source is None:
                raise ValueError(f"{arm.name} needs {arm.fixed_from} seed {seed} first")
            return fixed_lambda(source["detection_weight"], source["diagnostics"]["alpha_ratio"])
        if arm.best_lambda:
            return self.best_sweep_lambda()
        return arm.detection_weight

    def best_sweep_lambda(self) -> float:
        """The synthetic sweep's λ with the best balanced validation score: the mean over seeds
        of mAP50 / best mAP50 + Qabf / best Qabf (validation split only, never held-apart data)."""
        means = {}
        for arm in sweep_arms("synthetic"):
            runs = [self.current(arm.name, s) for s in self.seeds]
            if any(r is None for r in runs):
                raise ValueError(f"best λ needs every seed of {arm.name}")
            means[arm.detection_weight] = (
                statistics.fmean(r["metrics"]["val/mAP50"] for r in runs),
                statistics.fmean(r["metrics"]["val/fusion/Qabf"] for r in runs),
            )
        top_det = max(m[0] for m in means.values()) or 1.0
        top_fus = max(m[1] for m in means.values()) or 1.0
        return max(means, key=lambda lam: means[lam][0] / top_det + means[lam][1] / top_fus)


# ----------------------------------------------------------------------------- one run


def alpha_ratio(log: Sequence[Mapping[str, float]]) -> float:
    """Median over measured steps of α_detection / α_fusion (both tasks active)."""
    ratios = [
        row["alpha/detection"] / row["alpha/fusion"]
        for row in log
        if row.get("alpha/fusion", 0) > 0 and row.get("alpha/detection", 0) > 0
    ]
    if not ratios:
        raise ValueError("no step of the UnityGrad run solved α for both tasks")
    return statistics.median(ratios)


def fixed_lambda(unitygrad_lambda: float, ratio: float) -> float:
    """The weighted-sum λ with UnityGrad's effective task weights α_d·λ : α_f·(1 − λ). Adam's step
    is invariant to a common scale of the loss, so the ratio is all a fixed weighting can copy."""
    detection, fusion = ratio * unitygrad_lambda, 1.0 - unitygrad_lambda
    return detection / (detection + fusion)


def run_config(
    arm: Arm,
    seed: int,
    detection_weight: float,
    out: Path,
    device: str,
    max_steps: int | None = None,
) -> TrainingConfig:
    """The training configuration of (arm, seed); ``max_steps`` caps the set-up's budget."""
    setup = DATA[arm.data]
    augment = load_training_config(REPO / setup.config).augment.options
    if arm.blank is not None:  # always drop the same camera: a single-camera model
        augment = {**augment, "dropout_probability": 1.0}
        augment["dropout_rgb_share"] = float(arm.blank == "rgb")
    overrides = {
        **setup.overrides(seed),
        "mtl.method": arm.method,
        "mtl.update_every": arm.update_every,
        "mtl.options": {},
        "loss.detection_weight": detection_weight,
        "model_overrides": {"fusion_head.image_skip": arm.image_skip},
        "augment.options": augment,
        "eval.fusion_metrics": list(VAL_FUSION_METRICS),
        "seed": seed,
        "device": device,
        "progress": False,
        "log_every": 1,
        "output_dir": str(out),
        **dict(arm.options),
    }
    if max_steps is not None:
        overrides |= {"max_steps": max_steps, "eval.every": 1}
    return load_training_config(REPO / setup.config, overrides)


def fingerprint(config: TrainingConfig, eval_limit: int | None = None) -> str:
    """What makes two runs the same: the full configuration (with the model's) and the
    held-apart evaluation (version, limit); not where it ran or wrote."""
    plain = config.to_dict()
    for key in ("output_dir", "device", "progress"):
        plain.pop(key)
    defaults = TrainingConfig(model=config.model).to_dict()
    for key in LATER_SECTIONS:  # at their defaults: the runs cached before them stay current
        if plain[key] == defaults[key]:
            plain.pop(key)
    plain["model"] = to_plain(config.model_config())
    plain["eval_version"] = EVAL_VERSION
    if eval_limit is not None:
        plain["eval_limit"] = eval_limit
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_log(path: Path) -> list[dict[str, float]]:
    with path.open() as stream:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(stream)]


def step_ms(log: Sequence[Mapping[str, float]]) -> float:
    """Median trainer step time after warm-up (data loading excluded)."""
    warm = log[min(10, len(log) // 4) :] or log
    return 1e3 * statistics.median(row["step_time_s"] for row in warm)


def diagnostics(log: Sequence[Mapping[str, float]], out: Path, method: str) -> dict[str, Any]:
    """The premise numbers of one run (mtl_summary.json) and α's median ratio."""
    summary = json.loads((out / "mtl_summary.json").read_text(encoding="utf-8"))
    pair = next(iter(summary["ema_cosine"]), None)
    found = {
        "step_ms": step_ms(log),
        "steps": summary["steps"],
        "premise_holds": summary["premise_conflicting_gradients"],
        "cosine_mean": (summary["cosine"].get(pair) or {}).get("mean"),
        "ema_cosine_last": (summary["ema_cosine"].get(pair) or {}).get("last"),
        "ema_cosine_min": (summary["ema_cosine_after_warmup"].get(pair) or {}).get("min"),
        "clip_factor_mean": summary["clip_factor"]["mean"],
        "shared_to_head": {t: s["mean"] for t, s in summary["shared_to_head_grad_ratio"].items()},
        "alpha_mean": {t: s["mean"] for t, s in summary["alpha"].items()},
    }
    norms = [
        (row["grad_norm/fusion"], row["grad_norm/detection"])
        for row in log
        if row.get("grad_norm/fusion", 0) > 0 and row.get("grad_norm/detection", 0) > 0
    ]
    found["detection_to_fusion_grad"] = (
        statistics.median(d / f for f, d in norms) if norms else None
    )
    found["alpha_ratio"] = alpha_ratio(log) if method == "unitygrad" else None
    return found


# ----------------------------------------------------------------------------- held-apart scores


class HeldApart:
    """The evaluation-only data, loaded once: VIFB pairs, the LLVIP sample, and the synthetic
    night/day sets are built per input size."""

    def __init__(self, data_root: Path, limit: int | None = None) -> None:
        from fusion_training import benchmark
        from fusion_training.datasets import build_dataset

        self.root, self.limit = data_root, limit
        try:
            self.vifb = benchmark.load_sources(data_root, benchmark.vifb_pairs(data_root, limit))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"study: held-apart VIFB pairs: {error}") from None
        llvip = data_root / "llvip_sample" / "LLVIP"
        if not llvip.is_dir():
            raise FileNotFoundError(f"study: held-apart LLVIP sample not found at {llvip}")
        self.llvip = build_dataset("llvip", llvip, split="train")

    @cached_property
    def llvip_sources(self) -> dict[str, dict[str, Any]]:
        """The LLVIP pairs as the contrast metric reads them (luma, thermal, person boxes)."""
        from fusion_perception.colour import rgb_to_ycbcr

        items = [self.llvip[i] for i in range(self.limit or len(self.llvip))]
        return {
            item["image_id"]: {
                "rgb": item["rgb"],
                "visible": rgb_to_ycbcr(item["rgb"])[:, :, 0],
                "thermal": item["thermal"],
                "boxes": item["boxes"],
                "labels": item["labels"],
            }
            for item in items
        }

    def llvip_contrast(self, engine) -> dict[str, float]:
        """Person contrast (`fusion_training.metrics.target_contrast`) of the fused LLVIP
        night images against thermal's and visible's on the same boxes."""
        from fusion_training.metrics.target_contrast import contrast_report

        sources = self.llvip_sources
        fused = {n: engine.infer(s["rgb"], s["thermal"]).fused_luma for n, s in sources.items()}
        person = list(self.llvip.class_names).index("person")
        return contrast_report(fused, sources, classes=[person])

    def score(self, checkpoint: Path, config: TrainingConfig, blank: str | None, device: str):

        from fusion_perception.engine import FusionEngine

        width, height = config.input_size
        scores: dict[str, float | None] = {}
        for name, seed, night in (("night", NIGHT_SEED, 1.0), ("day", DAY_SEED, 0.0)):
            scenes = SyntheticDataset(
                self.limit or NIGHT_SCENES,
                width=width,
                height=height,
                classes=tuple(config.classes),
                seed=seed,
                night_probability=night,
                transform=blank_modality(blank),
            )
            result = evaluate_checkpoint(checkpoint, scenes, device=device, fusion_metrics=())
            scores[f"{name}/mAP50"] = float(result["detection"]["mAP50"])
        if blank is not None:  # a single-camera model: no fusion and no real pairs to judge
            return scores
        result = evaluate_checkpoint(
            checkpoint, self.llvip, device=device, limit=self.limit, fusion_metrics=()
        )
        scores["llvip/person_AP50"] = float(result["detection"]["per_class"]["person"])
        scores["llvip/person_AP50_95"] = float(result["detection"]["per_class_50_95"]["person"])
        return scores | self.image_scores(FusionEngine(checkpoint, device=device))

    def image_scores(self, engine) -> dict[str, float]:
        """What ``engine``'s fused images are worth as pictures: the LLVIP person contrast and
        the VIFB textbook metrics."""
        import numpy as np

        from fusion_training import benchmark

        scores = {f"llvip/contrast_{k}": v for k, v in self.llvip_contrast(engine).items()}
        fused = {
            pair: engine.infer(rgb, ir.astype(np.float32) / 255.0).fused_luma
            for pair, (rgb, ir) in self.vifb.items()
        }
        means = benchmark.score_images(fused, self.vifb, "textbook", VIFB_METRICS).means
        return scores | {f"vifb/{k}": float(means[k]) for k in VIFB_METRICS}


def train_and_score(
    arm: Arm, seed: int, runs: StudyRuns, workdir: Path, held: HeldApart, device: str
) -> dict[str, Any]:
    """Train (arm, seed) from scratch, score it on the held-apart sets, cache the result."""
    lam = runs.detection_weight(arm, seed)
    out = workdir / arm.name / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)  # a study run always trains from scratch
    config = runs.config(arm, seed, lam, out, device)
    started = time.monotonic()
    trained = Trainer(config).fit()
    train_s = time.monotonic() - started
    log = read_log(out / "train_log.csv")
    metrics = {
        "val/mAP50": float(trained.metrics["mAP50"]),
        "val/mAP50_95": float(trained.metrics["mAP50_95"]),
        **{f"val/fusion/{k}": float(trained.metrics[f"fusion/{k}"]) for k in VAL_FUSION_METRICS},
    }
    metrics |= held.score(trained.last_checkpoint, config, arm.blank, device)
    result = {
        "arm": arm.name,
        "seed": seed,
        "data": arm.data,
        "method": arm.method,
        "detection_weight": lam,
        "image_skip": arm.image_skip,
        "blank": arm.blank,
        "fingerprint": runs.fingerprint(config),
        "metrics": metrics,
        "diagnostics": diagnostics(log, out, arm.method),
        "train_s": train_s,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_line(),
    }
    runs.save(result)
    return result


def rescore(
    arms: Sequence[Arm],
    runs: StudyRuns,
    workdir: Path,
    held: HeldApart,
    device: str,
    needed: str,
) -> list[str]:
    """Score the cached runs that lack the held-apart metric ``needed`` (added to the suite
    after they ran) from their checkpoints in ``workdir``, without training: only when the run
    folder's config.yaml has the cached result's fingerprint. Returns a line per run that could
    not be rescored."""
    missing = []
    for arm, seed in [(arm, seed) for arm in arms for seed in runs.seeds]:
        result = runs.current(arm.name, seed)
        if result is None or needed in result["metrics"]:
            continue
        out = workdir / arm.name / f"seed{seed}"
        config_path, checkpoint = out / "config.yaml", out / "last.pt"
        if not (config_path.is_file() and checkpoint.is_file()):
            missing.append(f"{arm.name} seed {seed}: no checkpoint in {out} to score {needed}")
            continue
        config = load_training_config(config_path)
        if runs.fingerprint(config) != result["fingerprint"]:
            missing.append(f"{arm.name} seed {seed}: {out} holds another run than the cached one")
            continue
        print(f"study: scoring {arm.name} seed {seed} for {needed}", flush=True)
        result["metrics"] |= held.score(checkpoint, config, arm.blank, device)
        runs.save(result)
    return missing


def run_study(
    arms: Sequence[Arm],
    runs: StudyRuns,
    workdir: Path,
    data_root: Path,
    device: str,
    budget_s: float | None,
) -> tuple[int, list[str]]:
    """Train what is missing or stale, in priority order, until the time budget; returns the
    number of runs trained and a line per (arm, seed) left undone."""
    started, trained, left = time.monotonic(), 0, []
    held = None
    for arm, seed in [(arm, seed) for arm in arms for seed in runs.seeds]:
        if runs.current(arm.name, seed) is not None:
            continue
        waiting = [
            f"{name} seed {s}"
            for name, s in arm.depends_on(runs.seeds, seed)
            if runs.current(name, s) is None
        ]
        if waiting:
            left.append(f"{arm.name} seed {seed}: waits for {', '.join(waiting)}")
            continue
        if budget_s is not None and time.monotonic() - started > budget_s:
            left.append(f"{arm.name} seed {seed}: time budget spent")
            continue
        if arm.data == "real":
            _require_real_pairs()
        held = held or HeldApart(data_root, runs.eval_limit)
        print(f"study: training {arm.name} seed {seed}", flush=True)
        result = train_and_score(arm, seed, runs, workdir, held, device)
        trained += 1
        shown = ", ".join(f"{k} {v:.3f}" for k, v in result["metrics"].items() if finite(v))
        print(f"study: {arm.name} seed {seed} in {result['train_s']:.0f} s: {shown}", flush=True)
    return trained, left


def _require_real_pairs() -> None:
    parts = load_training_config(REPO / DATA["real"].config).dataset.options["parts"]
    for part in parts:
        root = part.get("root")
        if root and not Path(root, "manifest.yaml").is_file():
            raise FileNotFoundError(
                f"study: the real arms train on {root}, which does not exist here; "
                f"build it first: fusion-prepare-real --out {root}"
            )


def machine_line() -> str:
    import os

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------- CLI


def _names(text: str, known: Sequence[str], flag: str, parser: argparse.ArgumentParser):
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown {unknown}; choose from {list(known)}")
    return chosen


def get_args_parser() -> argparse.ArgumentParser:
    from fusion_training.real_pairs import default_data_root

    parser = argparse.ArgumentParser(prog="fusion-study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of the report")
    parser.add_argument(
        "--cache",
        type=Path,
        help="folder of the per-(arm, seed) results (default: OUT/mtl_study_runs)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("runs/study"), help="scratch folder of the runs"
    )
    parser.add_argument("--arms", help="comma-separated arms (default: all, in priority order)")
    parser.add_argument("--data", help="only the arms on these data set-ups (synthetic, real)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="%(default)s")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root(),
        help="shared data root with vifb/ and llvip_sample/ (held apart; default: %(default)s)",
    )
    parser.add_argument(
        "--time-budget-min",
        type=float,
        help="start no new run after this many minutes (the report covers what is cached)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help="cap every run at N steps (quick checks; cached apart from full runs by fingerprint)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        help="score on the first N held-apart pairs/scenes only (quick checks; cached apart)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; report the cached runs"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from fusion_training import study_report

    parser = get_args_parser()
    args = parser.parse_args(argv)
    arms = list(ARMS)
    if args.arms:
        chosen = set(_names(args.arms, list(ARM_BY_NAME), "--arms", parser))
        arms = [arm for arm in arms if arm.name in chosen]
    if args.data:
        chosen = set(_names(args.data, list(DATA), "--data", parser))
        arms = [arm for arm in arms if arm.data in chosen]
    if not arms:
        parser.error("--arms/--data: no arm matches both")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds: distinct integers needed, got {args.seeds!r}")
    for flag, value in (("--max-steps", args.max_steps), ("--eval-limit", args.eval_limit)):
        if value is not None and value < 1:
            parser.error(f"{flag}: must be >= 1, got {value}")
    cache = args.cache or args.out / "mtl_study_runs"
    runs = StudyRuns(cache, seeds, args.max_steps, args.eval_limit)
    left: list[str] = []
    if not args.report_only:
        budget = None if args.time_budget_min is None else 60 * args.time_budget_min
        try:
            trained, left = run_study(arms, runs, args.workdir, args.data_root, args.device, budget)
        except FileNotFoundError as error:
            print(error, file=sys.stderr)
            return 2
        print(f"study: trained {trained} runs; {len(left)} left undone")
        for line in left:
            print(f"  not run: {line}")
    results = [
        result for arm in ARMS for s in seeds if (result := runs.current(arm.name, s)) is not None
    ]
    done = {(r["arm"], r["seed"]) for r in results}
    noted = {tuple(line.split(":", 1)[0].rsplit(" seed ", 1)) for line in left}
    left += [
        f"{arm.name} seed {s}: not run yet"
        for arm in ARMS
        for s in seeds
        if (arm.name, s) not in done and (arm.name, str(s)) not in noted
    ]
    if not results:
        print(f"study: no current cached runs in {runs.root}; nothing to report", file=sys.stderr)
        return 1
    path = study_report.write(results, seeds, args.out, left)
    print(f"study: {path} from {len(results)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
