"""Detection accuracy: COCO mAP for horizontal boxes, VOC AP50 with exact polygon IoU for rotated boxes.

Inputs follow the package box convention: per image, predictions {"boxes": [n, 5] (cx, cy, w, h,
angle) in pixels, "scores": [n], "labels": [n] int} and ground truth {"boxes": [m, 5], "labels":
[m]}; torch tensors (any device) or numpy arrays. The angle rotates the box's x-axis towards the
image's +y axis (OpenCV minAreaRect style); horizontal boxes have angle 0.

Horizontal mAP uses faster-coco-eval (COCO protocol: 101-point interpolated AP, IoU 0.50:0.05:0.95,
at most `max_dets` detections per image, area range "all"). Rotated AP50 uses the exact IoU of the
two rectangles' polygons (fusion_perception.boxes) and either VOC interpolation: "all-point"
(VOC 2010+, the area under the monotone precision envelope) or "11-point" (VOC 2007: the mean of
the envelope at recall 0, 0.1, ..., 1), which is what mmrotate's eval_rbbox_map and the DOTA devkit
report for DroneVehicle by default. A detection is a true positive when its best-overlapping
ground truth of the same class has IoU >= the threshold and is not yet taken (mmrotate's >=; the
VOC devkit uses >). Ground truth may carry "difficult" flags (bool [m]): as in VOC, a detection
whose best match is a difficult object counts as neither true nor false positive, and difficult
objects are not counted as positives. Classes without (non-difficult) ground truth get AP NaN and
are left out of the mean (COCO convention). coco_map ignores "difficult".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from fusion_perception.boxes import box_iou_rotated

_log = logging.getLogger(__name__)
_ANGLE_TOL = 1e-6


def _as_array(value: object, name: str, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value.astype(dtype, copy=False)


def _unpack(
    entry: Mapping[str, object], name: str, num_classes: int, with_scores: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate one image's dict; return (boxes [n,5] float64, labels [n] int64, scores or None)."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"{name} must be a dict with boxes/labels, got {type(entry).__name__}")
    missing = [
        k for k in ("boxes", "labels", *(("scores",) if with_scores else ())) if k not in entry
    ]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}")
    boxes = _as_array(entry["boxes"], f"{name}['boxes']", np.float64)
    labels = _as_array(entry["labels"], f"{name}['labels']", np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"{name}['boxes'] must be [n, 5] (cx, cy, w, h, angle), got {boxes.shape}")
    n = boxes.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"{name}['labels'] must have shape ({n},), got {labels.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name}['boxes'] contains NaN or inf")
    # ground truth needs a positive area; a degenerate (zero-size) prediction simply never matches
    smallest = boxes[:, 2:4].min() if n else 1.0
    if smallest < 0 or (smallest == 0 and not with_scores):
        raise ValueError(f"{name}['boxes'] has a width/height of {smallest}; must be > 0")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name}['labels'] has values in [{labels.min()}, {labels.max()}], outside "
            f"[0, {num_classes - 1}] for {num_classes} class names"
        )
    scores = None
    if with_scores:
        scores = _as_array(entry["scores"], f"{name}['scores']", np.float64)
        if scores.shape != (n,):
            raise ValueError(f"{name}['scores'] must have shape ({n},), got {scores.shape}")
    return boxes, labels, scores


def _check_lists(predictions: Sequence, targets: Sequence, class_names: Sequence[str]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must list the same images, got {len(predictions)} and "
            f"{len(targets)} entries"
        )
    if len(class_names) == 0:
        raise ValueError("class_names must not be empty")


def coco_map(
    predictions: Sequence[Mapping[str, object]],
    targets: Sequence[Mapping[str, object]],
    class_names: Sequence[str],
    max_dets: int = 100,
) -> dict[str, object]:
    """COCO mAP of horizontal boxes (angle must be 0).

    Returns {"mAP50": float, "mAP50_95": float, "per_class": {name: AP50},
    "per_class_50_95": {name: AP50:95}}; AP values are in [0, 1], NaN for classes without
    ground truth.
    """
    _check_lists(predictions, targets, class_names)
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    num_classes = len(class_names)
    images, gt_anns, dt_anns = [], [], []
    for i, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
        images.append({"id": i + 1})
        gt_boxes, gt_labels, _ = _unpack(target, f"targets[{i}]", num_classes, False)
        dt_boxes, dt_labels, dt_scores = _unpack(pred, f"predictions[{i}]", num_classes, True)
        for boxes, name in ((gt_boxes, f"targets[{i}]"), (dt_boxes, f"predictions[{i}]")):
            if boxes.shape[0] and np.abs(boxes[:, 4]).max() > _ANGLE_TOL:
                raise ValueError(
                    f"{name}['boxes'] has non-zero angles (max |angle| "
                    f"{np.abs(boxes[:, 4]).max():.3g}); use rotated_voc_ap50 for rotated boxes"
                )
        for box, label in zip(gt_boxes, gt_labels, strict=True):
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": _coco_xywh(box),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(dt_boxes, dt_labels, dt_scores, strict=True):
            dt_anns.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": _coco_xywh(box),
                    "score": float(score),
                }
            )
    categories = [{"id": c + 1, "name": str(n)} for c, n in enumerate(class_names)]
    coco_gt = COCO(
        {"images": images, "annotations": gt_anns, "categories": categories},
        print_function=_log.debug,
    )
    coco_dt = coco_gt.loadRes(dt_anns)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_log.debug)
    evaluator.params.catIds = [c["id"] for c in categories]
    evaluator.params.maxDets = [max_dets]
    evaluator.evaluate()
    evaluator.accumulate()
    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; -1 = no GT
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
    with np.errstate(invalid="ignore"):
        valid = precision > -1
        per_iou = np.where(valid, precision, 0.0).sum(axis=1) / valid.sum(axis=1)  # [T, K]
    has_gt = valid.any(axis=(0, 1))
    ap50 = np.where(has_gt, per_iou[0], np.nan)
    ap50_95 = np.where(has_gt, per_iou.mean(axis=0), np.nan)
    return {
        "mAP50": _nanmean(ap50),
        "mAP50_95": _nanmean(ap50_95),
        "per_class": {str(n): float(v) for n, v in zip(class_names, ap50, strict=True)},
        "per_class_50_95": {str(n): float(v) for n, v in zip(class_names, ap50_95, strict=True)},
    }


def _coco_xywh(box: np.ndarray) -> list[float]:
    cx, cy, w, h = (float(v) for v in box[:4])
    return [cx - w / 2.0, cy - h / 2.0, w, h]


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def rotated_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Exact pairwise IoU of rotated boxes [n, 5] x [m, 5] -> [n, m] (the runtime's polygon IoU, so
    evaluation and NMS agree on what overlap means). Zero-area boxes have IoU 0 with everything."""
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        return np.zeros((boxes1.shape[0], boxes2.shape[0]))
    iou = box_iou_rotated(
        torch.as_tensor(boxes1, dtype=torch.float64), torch.as_tensor(boxes2, dtype=torch.float64)
    )
    return iou.numpy()


AP_INTERPOLATIONS = ("all-point", "11-point")


def voc_ap(recall: np.ndarray, precision: np.ndarray, interpolation: str = "all-point") -> float:
    """VOC AP of a precision/recall curve (detections in score order).

    "all-point" (VOC 2010+): area under the monotone precision envelope. "11-point" (VOC 2007):
    mean over recall levels t = 0, 0.1, ..., 1 of the highest precision at recall >= t (0 where
    the curve never reaches t).
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if interpolation == "11-point":
        levels = np.linspace(0.0, 1.0, 11)
        best = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in levels]
        return float(np.mean(best))
    if interpolation != "all-point":
        raise ValueError(f"interpolation must be one of {AP_INTERPOLATIONS}, got {interpolation!r}")
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]).sum())


def _difficult(entry: Mapping[str, object], name: str, count: int) -> np.ndarray:
    """The target's "difficult" flags as bool [count] (all False when the key is absent)."""
    if entry.get("difficult") is None:
        return np.zeros(count, dtype=bool)
    flags = _as_array(entry["difficult"], f"{name}['difficult']", np.int64)
    if flags.shape != (count,) or not np.isin(flags, (0, 1)).all():
        raise ValueError(
            f"{name}['difficult'] must be {count} flags of 0/1 (one per box), got {flags.tolist()}"
        )
    return flags.astype(bool)


def rotated_voc_ap50(
    predictions: Sequence[Mapping[str, object]],
    targets: Sequence[Mapping[str, object]],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    interpolation: str = "all-point",
) -> dict[str, object]:
    """VOC AP at `iou_threshold` for rotated boxes with exact polygon IoU.

    interpolation: "all-point" (VOC 2010+) or "11-point" (VOC 2007, mmrotate's DOTA default).
    Targets may hold "difficult" flags [m] (ignored objects, see the module docstring).
    Returns {"AP50": mean over classes with ground truth, "per_class": {name: AP}}.
    """
    _check_lists(predictions, targets, class_names)
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if interpolation not in AP_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {AP_INTERPOLATIONS}, got {interpolation!r}")
    num_classes = len(class_names)
    num_gt = np.zeros(num_classes, dtype=np.int64)
    # per class: score-sorted scores and outcomes (1 TP, 0 FP, -1 ignored) of each image's detections
    det_scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    det_outcome: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for i, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
        gt_boxes, gt_labels, _ = _unpack(target, f"targets[{i}]", num_classes, False)
        gt_difficult = _difficult(target, f"targets[{i}]", len(gt_labels))
        dt_boxes, dt_labels, dt_scores = _unpack(pred, f"predictions[{i}]", num_classes, True)
        num_gt += np.bincount(gt_labels[~gt_difficult], minlength=num_classes)
        iou = rotated_iou(dt_boxes, gt_boxes)
        for c in np.unique(dt_labels):
            dets = np.nonzero(dt_labels == c)[0]
            gts = np.nonzero(gt_labels == c)[0]
            dets = dets[np.argsort(-dt_scores[dets], kind="stable")]
            det_scores[c].append(dt_scores[dets])
            det_outcome[c].append(
                match_greedy(iou[np.ix_(dets, gts)], gt_difficult[gts], iou_threshold)
            )
    per_class = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if num_gt[c] == 0:
            continue
        if not det_scores[c]:
            per_class[c] = 0.0
            continue
        scores = np.concatenate(det_scores[c])
        order = np.argsort(-scores, kind="stable")
        outcome = np.concatenate(det_outcome[c])[order]
        tp = (outcome[outcome >= 0] == 1).astype(np.float64)
        if tp.size == 0:  # every detection hit a difficult object
            per_class[c] = 0.0
            continue
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1.0 - tp)
        per_class[c] = voc_ap(tp_cum / num_gt[c], tp_cum / (tp_cum + fp_cum), interpolation)
    return {
        "AP50": _nanmean(per_class),
        "per_class": {str(n): float(v) for n, v in zip(class_names, per_class, strict=True)},
    }


def match_greedy(iou: np.ndarray, difficult: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy VOC matching within one image and class; rows sorted by score, columns the ground
    truth with its difficult flags. Returns int8 outcomes: 1 TP, 0 FP, -1 ignored (its best
    match is a difficult object, taken or not, as in the VOC devkit)."""
    outcome = np.zeros(iou.shape[0], dtype=np.int8)
    if iou.shape[1] == 0:
        return outcome
    taken = np.zeros(iou.shape[1], dtype=bool)
    best = iou.argmax(axis=1)
    for d, g in enumerate(best):
        if iou[d, g] < threshold:
            continue
        if difficult[g]:
            outcome[d] = -1
        elif not taken[g]:
            outcome[d] = 1
            taken[g] = True
    return outcome
