"""Fit a checkpoint's score calibration on labelled pairs (see
`fusion_perception.score_calibration` for what it is and why).

Every box the engine reports on a labelled item (raw scores, threshold 0.001, the engine's NMS
and box cap), of a class the dataset labels, becomes one sample: its raw score and whether it is
a correct detection, matched as VOC AP matches (greedy by score within each image and class: a
box is correct when the object it overlaps most, at IoU >= ``iou``, is not taken by a higher
box; boxes whose best object is ``difficult`` are left out). Logistic regression of correctness
on logit(raw score), with Platt's smoothed targets, gives the slope and offset (two parameters:
a few hundred boxes of a held-out split are enough, and a monotone map cannot change AP).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import box_iou
from tqdm import tqdm

from fusion_perception.boxes import cxcywh_to_xyxy
from fusion_perception.engine import FusionEngine
from fusion_perception.score_calibration import LOGIT_EPS, ScoreCalibration
from fusion_training.evaluate import class_index_map
from fusion_training.metrics.detection import match_greedy, rotated_iou


@dataclass
class ScoredBoxes:
    """One sample per reported box: raw score, correct (bool), the item it came from, and how
    many objects there were."""

    scores: np.ndarray  # float64 [n]
    correct: np.ndarray  # bool [n]
    image_ids: np.ndarray  # int64 [n], index of the labelled item
    objects: int
    images: int


def _iou(predicted: np.ndarray, objects: np.ndarray, rotated: bool) -> np.ndarray:
    if rotated:
        return rotated_iou(predicted, objects)
    first = cxcywh_to_xyxy(torch.as_tensor(predicted[:, :4], dtype=torch.float64))
    second = cxcywh_to_xyxy(torch.as_tensor(objects[:, :4], dtype=torch.float64))
    return box_iou(first, second).numpy()


def score_boxes(
    engine: FusionEngine,
    dataset: Dataset,
    *,
    iou: float = 0.5,
    limit: int | None = None,
    progress: bool = False,
) -> ScoredBoxes:
    """Run `engine` (built with ``calibrated_scores=False`` and a low score threshold) over the
    labelled items of `dataset` and label each reported box correct or not."""
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou: must be in (0, 1], got {iou}")
    if engine.score_calibration is not None:
        raise ValueError("engine: reports calibrated scores; build it with calibrated_scores=False")
    label_map = class_index_map(
        list(getattr(dataset, "class_names", engine.class_names)), engine.class_names
    )
    # boxes of a class the dataset never labels (cars on LLVIP) are neither right nor wrong
    labelled_classes = np.unique(label_map)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    scores, correct, image_ids, objects, images = [], [], [], 0, 0
    for index in tqdm(range(count), desc="score boxes", disable=not progress):
        item = dataset[index]
        if not item.get("labelled", True):
            continue  # unannotated objects are not background
        images += 1
        detections = engine.infer(item["rgb"], item["thermal"]).detections
        truth = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 5)
        truth_labels = label_map[np.asarray(item["labels"], dtype=np.int64)]
        objects += len(truth_labels)
        difficult = np.asarray(
            item.get("difficult", np.zeros(len(truth_labels))), dtype=bool
        ).reshape(-1)
        for label in np.intersect1d(np.unique(detections.labels), labelled_classes):
            rows = np.flatnonzero(detections.labels == label)
            rows = rows[np.argsort(-detections.scores[rows], kind="stable")]
            columns = np.flatnonzero(truth_labels == label)
            overlap = (
                _iou(np.asarray(detections.boxes[rows], np.float64), truth[columns], engine.rotated)
                if columns.size
                else np.zeros((rows.size, 0))
            )
            outcome = match_greedy(overlap, difficult[columns], iou)
            counted = outcome >= 0  # -1: its best match is a difficult object
            scores.append(detections.scores[rows][counted].astype(np.float64))
            correct.append(outcome[counted] == 1)
            image_ids.append(np.full(int(counted.sum()), images - 1, dtype=np.int64))
    if not scores:
        raise ValueError("dataset: the engine reported no boxes on its labelled items")
    return ScoredBoxes(
        np.concatenate(scores),
        np.concatenate(correct),
        np.concatenate(image_ids),
        objects,
        images,
    )


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, LOGIT_EPS, 1.0 - LOGIT_EPS)  # as ScoreCalibration.apply
    return np.log(clipped) - np.log1p(-clipped)


def fit_platt(scores: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (slope, offset) of P(correct) = sigmoid(slope * logit(s) + offset).

    Targets are Platt's smoothed ones, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), so that data the
    raw score separates perfectly still gives a finite slope; the mean log-loss is minimised by
    Newton's method (two parameters, exact Hessian) with step halving.
    """
    x, y = _logit(np.asarray(scores, np.float64)), np.asarray(correct, bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"scores: a fit needs correct and wrong boxes, got {positives} correct of {y.size}"
        )
    target = np.where(y, (positives + 1) / (positives + 2), 1.0 / (negatives + 2))
    features = np.stack([x, np.ones_like(x)], axis=1)

    def loss(params: np.ndarray) -> float:
        z = features @ params
        return float(np.mean(np.logaddexp(0.0, z) - target * z))

    params = np.array([1.0, 0.0])
    current = loss(params)
    for _ in range(100):
        probability = 1.0 / (1.0 + np.exp(-(features @ params)))
        gradient = features.T @ (probability - target) / x.size
        weight = probability * (1.0 - probability)
        hessian = (features * weight[:, None]).T @ features / x.size + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-8 and loss(params - scale * step) > current:
            scale /= 2.0
        params = params - scale * step
        previous, current = current, loss(params)
        if abs(previous - current) < 1e-12 or np.abs(gradient).max() < 1e-10:
            break
    slope, offset = (float(v) for v in params)
    if not (np.isfinite([slope, offset]).all() and slope > 0):
        raise ValueError(
            f"fit: no monotone calibration found (slope {slope:.3g}); the scores do not "
            "separate correct from wrong boxes on this data"
        )
    return slope, offset


def held_out_scores(boxes: ScoredBoxes, folds: int = 10) -> np.ndarray:
    """Each image's boxes calibrated by a fit without its fold of images (images dealt into
    at most `folds` folds by index): an honest estimate of how well the fit transfers, where the
    in-sample ECE flatters it. A fold whose rest cannot be fitted (no correct or no wrong box)
    is left NaN."""
    out = np.full_like(boxes.scores, np.nan)
    fold_of = boxes.image_ids % max(1, min(folds, boxes.images))
    for fold in np.unique(fold_of):
        held = fold_of == fold
        try:
            slope, offset = fit_platt(boxes.scores[~held], boxes.correct[~held])
        except ValueError:
            continue
        fitted = ScoreCalibration(slope, offset)
        out[held] = fitted.apply(torch.as_tensor(boxes.scores[held])).numpy()
    return out


def reliability(
    scores: np.ndarray, correct: np.ndarray, edges: Sequence[float] = tuple(np.linspace(0, 1, 11))
) -> list[dict[str, float]]:
    """Per score bin [lo, hi): boxes, mean score and the share that is correct."""
    table = []
    for lo, hi in itertools.pairwise(edges):
        inside = (scores >= lo) & ((scores < hi) if hi < 1.0 else (scores <= hi))
        if inside.any():
            table.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "boxes": int(inside.sum()),
                    "mean_score": float(scores[inside].mean()),
                    "precision": float(correct[inside].mean()),
                }
            )
    return table


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray) -> float:
    """Box-weighted mean |precision - mean score| over ten equal-width bins (NaN scores, boxes
    a held-out fold could not score, are left out)."""
    table = reliability(scores, correct)
    total = sum(row["boxes"] for row in table)
    return float(
        sum(row["boxes"] * abs(row["precision"] - row["mean_score"]) for row in table)
        / max(1, total)
    )


def calibrate(
    engine: FusionEngine,
    dataset: Dataset,
    *,
    fitted_on: dict[str, Any],
    iou: float = 0.5,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[ScoreCalibration, ScoredBoxes]:
    """Score the boxes, fit, and return the calibration with its samples (for the report)."""
    boxes = score_boxes(engine, dataset, iou=iou, limit=limit, progress=progress)
    slope, offset = fit_platt(boxes.scores, boxes.correct)
    record = {
        **fitted_on,
        "images": boxes.images,
        "objects": boxes.objects,
        "boxes": int(boxes.scores.size),
        "correct": int(boxes.correct.sum()),
        "iou": iou,
        "nms_threshold": engine.nms_threshold,
    }
    return ScoreCalibration(slope, offset, record), boxes


def plot_reliability(
    boxes: ScoredBoxes,
    calibration: ScoreCalibration,
    path: str | Path,
    title: str,
    held_out: np.ndarray | None = None,
) -> Path:
    """Reliability diagram (share correct per score bin) of the raw and calibrated scores, and
    of `held_out` (`held_out_scores`) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calibrated = calibration.apply(torch.as_tensor(boxes.scores)).numpy()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    curves = [("raw", boxes.scores, "tab:red"), ("calibrated", calibrated, "tab:blue")]
    if held_out is not None:
        curves.append(("held out (fit without the image's fold)", held_out, "tab:green"))
    for name, values, colour in curves:
        table = reliability(values, boxes.correct)
        ece = expected_calibration_error(values, boxes.correct)
        axis.plot(
            [row["mean_score"] for row in table],
            [row["precision"] for row in table],
            marker="o",
            color=colour,
            label=f"{name} score (ECE {ece:.3f})",
        )
        if values is calibrated:  # how many boxes each point stands on
            for row in table:
                axis.annotate(
                    str(row["boxes"]),
                    (row["mean_score"], row["precision"]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                    color=colour,
                )
    axis.set_xlabel("score (bin mean)")
    axis.set_ylabel(f"share of boxes that are correct (IoU >= {calibration.fitted_on['iou']:.2g})")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=9)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
