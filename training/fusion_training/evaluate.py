"""Evaluation loops shared by fusion-eval, the trainer and studies.

`evaluate_engine` / `evaluate_checkpoint` run a model over a dataset the way the node runs it
(FusionEngine: letterbox, one forward pass, boxes back in original pixels) and score both tasks:
fusion metrics of the fused luminance against the visible and thermal sources, and detection
AP (COCO mAP for horizontal models, VOC AP50 with exact polygon IoU for rotated ones).
`evaluate_fused_folder` scores any method's fused images, matched to their sources by file stem.

Results are plain dicts: ``{"fusion": {metric: mean}, "detection": {...}, "per_image": {...},
"meta": {...}}``. Values that are undefined (a class without ground truth) are NaN here;
`json_ready` turns them into null for JSON.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from fusion_perception.checkpoint import Checkpoint
from fusion_perception.engine import FusionEngine
from fusion_perception.image_files import index_images, read_image
from fusion_perception.thermal import ThermalNormalizer
from fusion_training.datasets.base import class_key
from fusion_training.metrics.detection import coco_map, rotated_voc_ap50
from fusion_training.metrics.fusion import PRESET_UNSUPPORTED, PRESETS, evaluate_fusion

FUSION_METRICS = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM", "SCD")


def fusion_metric_names(preset: str) -> list[str]:
    """The reported fusion metrics a preset defines (Tang's suite has no Wang SSIM)."""
    if preset not in PRESETS:
        raise ValueError(f"preset: {preset!r} is not one of {sorted(PRESETS)}")
    return [m for m in FUSION_METRICS if m not in PRESET_UNSUPPORTED.get(preset, {})]


class FusionAccumulator:
    """Per-image fusion metrics and their means over the finite values."""

    def __init__(self, preset: str, names: Sequence[str] | None = None) -> None:
        """`names`: the metrics to score (None: the preset's; empty: none)."""
        self.preset = preset
        self.names = fusion_metric_names(preset) if names is None else list(names)
        self.per_image: dict[str, dict[str, float]] = {}

    def add(self, image_id: str, fused: np.ndarray, vis: np.ndarray, ir: np.ndarray) -> None:
        """fused/vis/ir: uint8 (0..255) or float (0..1) HxW, or RGB HxWx3 (scored on BT.601 Y)."""
        if not self.names:
            return
        self.per_image[image_id] = evaluate_fusion(
            fused, vis, ir, preset=self.preset, metrics=self.names
        )

    def means(self) -> dict[str, float]:
        out = {}
        for name in self.names:
            values = np.array([m[name] for m in self.per_image.values()], dtype=np.float64)
            finite = values[np.isfinite(values)]
            out[name] = float(finite.mean()) if finite.size else math.nan
        return out

    def non_finite(self) -> dict[str, int]:
        """How many images gave NaN/inf per metric (left out of the means)."""
        counts = {
            name: sum(not math.isfinite(m[name]) for m in self.per_image.values())
            for name in self.names
        }
        return {name: n for name, n in counts.items() if n}


def class_index_map(dataset_classes: Sequence[str], model_classes: Sequence[str]) -> np.ndarray:
    """Dataset label index -> model class index, matched by name (case, '_', '-' ignored)."""
    index = {class_key(name): i for i, name in enumerate(model_classes)}
    missing = [name for name in dataset_classes if class_key(name) not in index]
    if missing:
        raise ValueError(
            f"dataset classes {missing} are not among the checkpoint's classes "
            f"{list(model_classes)}"
        )
    return np.array([index[class_key(name)] for name in dataset_classes], dtype=np.int64)


MODALITIES = ("rgb", "thermal")


def blank_modality(modality: str | None) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """Dataset transform that zeroes one camera, the way modality dropout blanks it in training:
    how the model does when that camera is lost (None: both cameras kept)."""
    if modality is None:
        return None
    if modality not in MODALITIES:
        raise ValueError(f"blank: must be one of {MODALITIES} or None, got {modality!r}")

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        return {**item, modality: np.zeros_like(item[modality])}

    return transform


def evaluate_engine(
    engine: FusionEngine,
    dataset: Dataset,
    *,
    preset: str = "textbook",
    limit: int | None = None,
    progress: bool = False,
    ap_interpolation: str = "all-point",
    fusion_metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run `engine` over dataset items ({"rgb", "thermal", "boxes", "labels", "image_id"}) and
    score fusion and detection. The dataset's class names are matched to the checkpoint's by
    name; run the engine with a low score threshold (e.g. 0.001) for AP. Items with ``labelled``
    False (fusion-only pairs) count for fusion only: their missing boxes are not "no objects".
    Rotated AP uses `ap_interpolation` ("all-point" or VOC07 "11-point") and ignores objects an
    item flags in ``difficult``. `fusion_metrics` names the fusion metrics to score (None: the
    preset's; empty: detection only, which skips the costly per-image fusion scores)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit: must be >= 1, got {limit}")
    if len(dataset) == 0:
        raise ValueError("dataset: has no items to evaluate")
    dataset_classes = list(getattr(dataset, "class_names", engine.class_names))
    label_map = class_index_map(dataset_classes, engine.class_names)
    if getattr(dataset, "rotated", False) and not engine.rotated:
        raise ValueError(
            "dataset: has rotated boxes but the checkpoint's detection head is horizontal; "
            "evaluate a rotated (obb) checkpoint on it"
        )
    fusion = FusionAccumulator(preset, fusion_metrics)
    predictions, targets = [], []
    unlabelled = 0
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), desc="evaluate", disable=not progress):
        item = dataset[index]
        result = engine.infer(item["rgb"], item["thermal"])
        fusion.add(item["image_id"], result.fused_luma, item["rgb"], item["thermal"])
        if not item.get("labelled", True):
            unlabelled += 1
            continue
        detections = result.detections
        predictions.append(
            {"boxes": detections.boxes, "scores": detections.scores, "labels": detections.labels}
        )
        labels = np.asarray(item["labels"], dtype=np.int64)
        target = {"boxes": np.asarray(item["boxes"]).reshape(-1, 5), "labels": label_map[labels]}
        if item.get("difficult") is not None:
            target["difficult"] = np.asarray(item["difficult"], dtype=bool)
        targets.append(target)
    if not targets:  # fusion-only data: no detection score at all, rather than a zero
        detection: dict[str, Any] = {}
    elif engine.rotated:
        detection = rotated_voc_ap50(
            predictions, targets, engine.class_names, interpolation=ap_interpolation
        )
    else:
        coco = coco_map(predictions, targets, engine.class_names, engine.max_detections)
        detection = {key: coco[key] for key in ("mAP50", "mAP50_95", "per_class")}
        detection["per_class_50_95"] = coco["per_class_50_95"]
    return {
        "fusion": fusion.means(),
        "detection": detection,
        "per_image": fusion.per_image,
        "meta": {
            "images": count,
            "detection_images": len(targets),
            "unlabelled_images": unlabelled,
            "objects": int(sum(len(t["labels"]) for t in targets)),
            "preset": preset,
            "classes": list(engine.class_names),
            "rotated": engine.rotated,
            "score_threshold": engine.score_threshold,
            "backend": engine.backend.name,
            "non_finite": fusion.non_finite(),
        },
    }


def evaluate_checkpoint(
    checkpoint: Checkpoint | str | os.PathLike,
    dataset: Dataset,
    *,
    device: str = "auto",
    fp16: bool | None = None,
    preset: str = "textbook",
    score_threshold: float = 0.001,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
    limit: int | None = None,
    progress: bool = False,
    ap_interpolation: str = "all-point",
    backend: str = "torch",
    artifact: str | os.PathLike | None = None,
    fusion_metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """`evaluate_engine` with a FusionEngine built from `checkpoint` (a path or a Checkpoint,
    e.g. `fusion_perception.checkpoint.new_checkpoint(model, ...)` from the trainer).
    `fp16` None follows the engine (half precision on CUDA, as the node runs); `backend` and
    `artifact` as FusionEngine takes them. Scores are the head's raw ones, whatever calibration
    the checkpoint carries: AP depends on the ranking only, and `score_threshold` then means
    the same for every checkpoint (the trainer's validation runs on raw scores too)."""
    engine = FusionEngine(
        checkpoint,
        calibrated_scores=False,  # AP ranks boxes; the low threshold stays a raw 0.001
        device=device,
        fp16=fp16,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
        max_detections=max_detections,
        backend=backend,
        artifact=artifact,
    )
    return evaluate_engine(
        engine,
        dataset,
        preset=preset,
        limit=limit,
        progress=progress,
        ap_interpolation=ap_interpolation,
        fusion_metrics=fusion_metrics,
    )


def _source_thermal(
    raw: np.ndarray, normalizer: ThermalNormalizer | None, path: Path
) -> np.ndarray:
    """8-bit thermal as stored; deeper thermal needs a normalizer (float32 [0, 1] out)."""
    if normalizer is not None:
        normalizer.reset()
        return normalizer(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        raise ValueError(
            f"--thermal: {path} is {raw.dtype} {raw.shape}; fusion metrics need 8-bit grey "
            "sources, or pass --normalization to map raw thermal to [0, 1]"
        )
    return raw


def evaluate_fused_folder(
    fused_dir: str | Path,
    rgb_dir: str | Path,
    thermal_dir: str | Path,
    *,
    preset: str = "textbook",
    thermal_normalization: ThermalNormalizer | None = None,
    progress: bool = False,
    on_skip: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fusion metrics of every fused image that has an RGB and a thermal source of the same
    stem. Fused images may be grey or colour (scored on their BT.601 Y); they must have the
    sources' size. `on_skip` receives a message about unmatched files."""
    fused = index_images(Path(fused_dir))
    rgb = index_images(Path(rgb_dir))
    thermal = index_images(Path(thermal_dir))
    stems = sorted(set(fused) & set(rgb) & set(thermal))
    if not stems:
        raise ValueError(
            f"--fused/--rgb/--thermal: no file stem is present in all of {fused_dir}, "
            f"{rgb_dir} and {thermal_dir}"
        )
    unmatched = sorted(set(fused) - set(stems))
    if unmatched and on_skip is not None:
        on_skip(f"{len(unmatched)} fused image(s) without both sources skipped: {unmatched[:10]}")
    accumulator = FusionAccumulator(preset)
    for stem in tqdm(stems, desc="evaluate", disable=not progress):
        image = read_image(fused[stem])
        vis = read_image(rgb[stem])
        ir = _source_thermal(read_image(thermal[stem]), thermal_normalization, thermal[stem])
        for what, other in (("--rgb", vis), ("--thermal", ir)):
            if other.shape[:2] != image.shape[:2]:
                raise ValueError(
                    f"--fused: {fused[stem].name} is {image.shape[1]}x{image.shape[0]} but its "
                    f"{what} source is {other.shape[1]}x{other.shape[0]}; fused images must "
                    "keep the sources' size"
                )
        if image.dtype != np.uint8:
            raise ValueError(f"--fused: {fused[stem]} must be 8-bit, found {image.dtype}")
        accumulator.add(stem, image, vis, ir)
    return {
        "fusion": accumulator.means(),
        "per_image": accumulator.per_image,
        "meta": {
            "images": len(stems),
            "preset": preset,
            "unmatched_fused": unmatched,
            "non_finite": accumulator.non_finite(),
        },
    }


def json_ready(value: Any) -> Any:
    """Nested results with NaN/inf replaced by None (JSON has no NaN) and numpy scalars as
    Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
