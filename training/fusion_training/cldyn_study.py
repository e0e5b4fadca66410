"""CLDyN in the seed-extension harness: per seed, a task compensation behind the study's
``real_ws_0.40`` fusion network for the study's visible-only detector (``real_rgb_only``, a
consumer that is not our detection head), scored on held-apart data as that consumer sees it.

Three views of each held-apart pair go to the consumer: its own camera (``visible``), the fusion
network's image (``viewer``: what the node publishes with ``fusion_task: viewer``) and the
compensated image (``detector``). The consumer's LLVIP person AP50 and synthetic night mAP50 on
each view say what the compensation buys it; VIFB metrics and the person contrast of the
compensated image say what it does to the picture a person would watch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.colour import merge_fused_luma
from fusion_perception.engine import FusionEngine
from fusion_training import cldyn
from fusion_training.study import NIGHT_SCENES, NIGHT_SEED, Arm, HeldApart, StudyRuns

__all__ = ["CONSUMER", "FUSION", "VIEWS", "ConsumerView", "run", "score"]

FUSION = "real_ws_0.40"
CONSUMER = Arm("real_rgb_only", "real", "weighted_sum", 0.4, blank="thermal")
ARM = Arm("real_cldyn", "real", "weighted_sum", 0.4)
CONFIG = Path("config/training/cldyn_real.yaml")
VIEWS = ("visible", "viewer", "detector")
SCORE_VERSION = 1


class ConsumerView(Dataset):
    """Items as the consumer reads them: ``engine``'s published colour image (None: the visible
    camera itself) as its RGB input, thermal blanked; boxes and labels unchanged."""

    def __init__(self, base: Dataset, engine: FusionEngine | None) -> None:
        self.base, self.engine = base, engine
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        rgb = item["rgb"]
        if self.engine is not None:
            rgb = merge_fused_luma(self.engine.infer(rgb, item["thermal"]).fused_luma, rgb)
        return {**item, "rgb": rgb, "thermal": np.zeros_like(item["thermal"])}


def paths(workdir: Path, seed: int) -> dict[str, Path]:
    return {
        "fusion": workdir / FUSION / f"seed{seed}" / "last.pt",
        "consumer": workdir / CONSUMER.name / f"seed{seed}" / "last.pt",
        "compensation": workdir / ARM.name / f"seed{seed}" / "compensation.pt",
    }


def training_config(workdir: Path, seed: int, device: str) -> cldyn.CLDyNConfig:
    where = paths(workdir, seed)
    return cldyn.load_cldyn_config(
        CONFIG,
        {
            "fusion_checkpoint": str(where["fusion"]),
            "downstream_checkpoint": str(where["consumer"]),
            "output": str(where["compensation"]),
            "seed": seed,
            "device": device,
            "progress": False,
        },
    )


def fingerprint(cfg: cldyn.CLDyNConfig) -> str:
    """The run's identity: its settings and the two frozen networks' weights."""
    plain = {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress", "output")} | {
        "fusion_checkpoint": load_checkpoint(cfg.fusion_checkpoint).fingerprint(),
        "downstream_checkpoint": load_checkpoint(cfg.downstream_checkpoint).fingerprint(),
        "score_version": SCORE_VERSION,
    }
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def score(held: HeldApart, cfg: cldyn.CLDyNConfig, device: str) -> dict[str, float]:
    """The consumer on each view, and the compensated image's own fusion metrics."""
    from fusion_training.datasets.synthetic_scenes import SyntheticDataset
    from fusion_training.evaluate import evaluate_checkpoint

    consumer = load_checkpoint(cfg.downstream_checkpoint)
    width, height = consumer.input_size
    engines = {
        "visible": None,
        "viewer": FusionEngine(cfg.fusion_checkpoint, device=device),
        "detector": FusionEngine(cfg.fusion_checkpoint, device=device, compensation=cfg.output),
    }
    night = SyntheticDataset(
        held.limit or NIGHT_SCENES,
        width=width,
        height=height,
        classes=tuple(consumer.class_names),
        seed=NIGHT_SEED,
        night_probability=1.0,
    )
    scores: dict[str, float] = {}
    for view, engine in engines.items():
        llvip = evaluate_checkpoint(
            consumer,
            ConsumerView(held.llvip, engine),
            device=device,
            limit=held.limit,
            fusion_metrics=(),
        )
        scores[f"consumer/{view}/llvip_person_AP50"] = llvip["detection"]["per_class"]["person"]
        synthetic = evaluate_checkpoint(
            consumer, ConsumerView(night, engine), device=device, fusion_metrics=()
        )
        scores[f"consumer/{view}/night_mAP50"] = synthetic["detection"]["mAP50"]
    scores |= held.image_scores(engines["detector"])
    return {k: float(v) for k, v in scores.items()}


def current(runs: StudyRuns, workdir: Path, seed: int) -> dict[str, Any] | None:
    """The cached result of ``seed`` if a rerun would train and score exactly it, else None."""
    cached = runs.load(ARM.name, seed)
    if cached is None or not all(p.is_file() for p in paths(workdir, seed).values()):
        return None
    return (
        cached
        if cached["fingerprint"] == fingerprint(training_config(workdir, seed, "cpu"))
        else None
    )


def run(
    runs: StudyRuns, workdir: Path, held: HeldApart, device: str, seeds: list[int]
) -> list[str]:
    """Train and score what is missing or stale; a line per seed that could not run."""
    left = []
    for seed in seeds:
        where = paths(workdir, seed)
        missing = [f"{k} {p}" for k, p in where.items() if k != "compensation" and not p.is_file()]
        if missing:
            left.append(f"{ARM.name} seed {seed}: waits for {', '.join(missing)}")
            continue
        if current(runs, workdir, seed) is not None:
            continue
        cfg = training_config(workdir, seed, device)
        key = fingerprint(cfg)
        print(f"seed-extensions: training {ARM.name} seed {seed}", flush=True)
        started = time.monotonic()
        _, log = cldyn.train(cfg)
        train_s = time.monotonic() - started
        metrics = score(held, cfg, device)
        last = log[-min(50, len(log)) :]
        runs.save(
            {
                "arm": ARM.name,
                "seed": seed,
                "fingerprint": key,
                "detection_weight": ARM.detection_weight,
                "train_s": train_s,
                "metrics": metrics,
                "diagnostics": {
                    "task_plain_last50": float(np.mean([r["task_plain"] for r in last])),
                    "task_compensated_last50": float(
                        np.mean([r["task_compensated"] for r in last])
                    ),
                    "correction_abs_last50": float(np.mean([r["correction_abs"] for r in last])),
                },
            }
        )
        print(f"seed-extensions: {ARM.name} seed {seed} in {train_s:.0f} s: {metrics}", flush=True)
    return left
