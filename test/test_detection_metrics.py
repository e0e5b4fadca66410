"""Detection metrics: COCO mAP (faster-coco-eval) and rotated VOC AP50 with exact polygon IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fusion_training.metrics import detection as dm
from shapely import affinity
from shapely.geometry import box as shapely_box


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def _pred(boxes, labels, scores):
    out = _gt(boxes, labels)
    out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_perfect_predictions_score_one():
    targets = [
        _gt([[50, 50, 20, 10, 0], [100, 100, 30, 30, 0]], [0, 1]),
        _gt([[30, 40, 10, 12, 0]], [0]),
    ]
    preds = [
        _pred(t["boxes"].tolist(), t["labels"].tolist(), [0.9] * len(t["labels"])) for t in targets
    ]
    res = dm.coco_map(preds, targets, ["car", "person", "bus"])
    assert res["mAP50"] == pytest.approx(1.0)
    assert res["mAP50_95"] == pytest.approx(1.0)
    assert res["per_class"]["car"] == pytest.approx(1.0)
    assert math.isnan(res["per_class"]["bus"])  # no ground truth: left out of the mean
    rot = dm.rotated_voc_ap50(preds, targets, ["car", "person", "bus"])
    assert rot["AP50"] == pytest.approx(1.0)


def test_half_of_the_ground_truth_matched():
    targets = [_gt([[50, 50, 20, 10, 0], [150, 100, 30, 30, 0]], [0, 0])]
    preds = [_pred([[50, 50, 20, 10, 0]], [0], [0.9])]
    # COCO: precision 1 at the 51 recall points 0, 0.01, ..., 0.50 out of 101
    assert dm.coco_map(preds, targets, ["car"])["mAP50"] == pytest.approx(51 / 101)
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(0.5)


def test_false_positive_ranked_first_halves_precision():
    targets = [_gt([[50, 50, 20, 20, 0]], [0])]
    preds = [_pred([[150, 150, 20, 20, 0], [50, 50, 20, 20, 0]], [0, 0], [0.9, 0.8])]
    assert dm.coco_map(preds, targets, ["car"])["mAP50"] == pytest.approx(0.5)
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive_after_the_match():
    targets = [_gt([[50, 50, 20, 20, 0]], [0])]
    preds = [_pred([[50, 50, 20, 20, 0], [51, 50, 20, 20, 0]], [0, 0], [0.9, 0.8])]
    # recall reaches 1 at precision 1 before the duplicate, so the envelope keeps AP at 1
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(1.0)
    preds_low_first = [_pred([[51, 50, 20, 20, 0], [50, 50, 20, 20, 0]], [0, 0], [0.9, 0.8])]
    assert dm.rotated_voc_ap50(preds_low_first, targets, ["car"])["AP50"] == pytest.approx(1.0)


def test_zero_size_prediction_is_a_false_positive():
    targets = [_gt([[50, 50, 20, 20, 0]], [0])]
    preds = [_pred([[50, 50, 0, 0, 0], [50, 50, 20, 20, 0]], [0, 0], [0.9, 0.8])]
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(0.5)
    assert dm.coco_map(preds, targets, ["car"])["mAP50"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="width/height"):
        dm.coco_map(preds, [_gt([[50, 50, 0, 20, 0]], [0])], ["car"])


def test_iou_between_thresholds_counts_for_three_of_ten():
    targets = [_gt([[100, 100, 100, 100, 0]], [0])]
    preds = [_pred([[123, 100, 100, 100, 0]], [0], [0.7])]  # IoU = 77/123 = 0.626
    res = dm.coco_map(preds, targets, ["car"])
    assert res["mAP50"] == pytest.approx(1.0)
    assert res["mAP50_95"] == pytest.approx(0.3)  # thresholds 0.50, 0.55, 0.60 of ten


def test_per_class_mean_and_missing_detections():
    targets = [_gt([[50, 50, 20, 20, 0], [120, 60, 16, 30, 0]], [0, 1])]
    preds = [_pred([[50, 50, 20, 20, 0]], [0], [0.8])]
    res = dm.coco_map(preds, targets, ["car", "person"])
    assert res["per_class"] == {"car": pytest.approx(1.0), "person": 0.0}
    assert res["mAP50"] == pytest.approx(0.5)
    rot = dm.rotated_voc_ap50(preds, targets, ["car", "person"])
    assert rot["per_class"] == {"car": pytest.approx(1.0), "person": 0.0}


def test_voc_all_point_ap_by_hand():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    assert dm.voc_ap(recall, precision) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def _shapely_box(b):
    cx, cy, w, h, a = b
    poly = affinity.rotate(
        shapely_box(-w / 2, -h / 2, w / 2, h / 2), a, origin=(0, 0), use_radians=True
    )
    return affinity.translate(poly, cx, cy)


def test_rotated_iou_matches_shapely_oracle():
    rng = np.random.default_rng(0)
    b1 = np.column_stack(
        [
            rng.uniform(20, 60, 6),
            rng.uniform(20, 60, 6),
            rng.uniform(5, 40, 6),
            rng.uniform(5, 40, 6),
            rng.uniform(-3, 3, 6),
        ]
    )
    b2 = b1[::-1] + rng.normal(0, 3, b1.shape) * [1, 1, 0.1, 0.1, 0.05]
    got = dm.rotated_iou(b1, b2)
    for i in range(len(b1)):
        for j in range(len(b2)):
            p, q = _shapely_box(b1[i]), _shapely_box(b2[j])
            assert got[i, j] == pytest.approx(p.intersection(q).area / p.union(q).area, abs=1e-9)


def test_rotated_ap_uses_exact_polygon_iou():
    targets = [_gt([[100, 100, 100, 10, 0.0], [300, 300, 100, 10, math.pi / 4]], [0, 0])]
    # same rectangle as the first target written with w/h swapped and angle pi/2: polygon IoU 1,
    # though comparing (w, h) while ignoring the angle would give IoU 0.1
    swapped = [100, 100, 10, 100, math.pi / 2]
    # thin box crossing the second target at -45 deg: same enclosing axis-aligned box, IoU ~0.05
    crossed = [300, 300, 100, 10, -math.pi / 4]
    res = dm.rotated_voc_ap50([_pred([swapped, crossed], [0, 0], [0.9, 0.8])], targets, ["car"])
    assert res["AP50"] == pytest.approx(0.5)
    assert dm.rotated_iou(np.array([swapped]), targets[0]["boxes"][:1].numpy())[
        0, 0
    ] == pytest.approx(1.0)
    assert dm.rotated_iou(np.array([crossed]), targets[0]["boxes"][1:].numpy())[0, 0] < 0.1


def test_bad_inputs_raise_clear_errors():
    targets = [_gt([[50, 50, 20, 20, 0]], [0])]
    with pytest.raises(ValueError, match="non-zero angles"):
        dm.coco_map([_pred([[50, 50, 20, 20, 0.3]], [0], [0.9])], targets, ["car"])
    with pytest.raises(ValueError, match=r"labels.*outside"):
        dm.coco_map([_pred([[50, 50, 20, 20, 0]], [3], [0.9])], targets, ["car"])
    with pytest.raises(ValueError, match="same images"):
        dm.rotated_voc_ap50([], targets, ["car"])
    with pytest.raises(ValueError, match="scores"):
        dm.rotated_voc_ap50([_gt([[50, 50, 20, 20, 0]], [0])], targets, ["car"])
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        dm.coco_map([_pred([[50, 50, 20, 20]], [0], [0.9])], targets, ["car"])


def test_voc07_eleven_point_against_all_point_by_hand():
    # two cars; detections by score: hit, miss, hit -> recall 0.5, 0.5, 1; precision 1, 1/2, 2/3
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    # all-point: 0.5 * 1 + 0.5 * 2/3; 11-point: recall levels 0..0.5 see precision 1 (six
    # levels), 0.6..1 see 2/3 (five levels): (6 + 5 * 2/3) / 11 = 28/33
    assert dm.voc_ap(recall, precision) == pytest.approx(5 / 6)
    assert dm.voc_ap(recall, precision, "11-point") == pytest.approx(28 / 33)
    targets = [_gt([[50, 50, 20, 20, 0], [150, 150, 20, 20, 0]], [0, 0])]
    preds = [
        _pred(
            [[50, 50, 20, 20, 0], [300, 300, 20, 20, 0], [150, 150, 20, 20, 0]],
            [0, 0, 0],
            [0.9, 0.8, 0.7],
        )
    ]
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(5 / 6)
    eleven = dm.rotated_voc_ap50(preds, targets, ["car"], interpolation="11-point")
    assert eleven["AP50"] == pytest.approx(28 / 33) and eleven["per_class"]["car"] == eleven["AP50"]
    # half the objects found at precision 1: all-point 0.5, 11-point 6/11 (levels 0..0.5)
    half = [_pred([[50, 50, 20, 20, 0]], [0], [0.9])]
    assert dm.rotated_voc_ap50(half, targets, ["car"], interpolation="11-point")[
        "AP50"
    ] == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match="interpolation"):
        dm.rotated_voc_ap50(preds, targets, ["car"], interpolation="101-point")


def test_difficult_objects_are_neither_hits_nor_misses():
    car, hard_car = [50, 50, 20, 20, 0], [150, 150, 20, 20, 0]
    targets = [{**_gt([car, hard_car], [0, 0]), "difficult": torch.tensor([False, True])}]
    # by score: the difficult car (ignored), its duplicate (ignored too), a miss, the easy car
    preds = [
        _pred(
            [hard_car, [151, 150, 20, 20, 0], [300, 300, 20, 20, 0], car],
            [0, 0, 0, 0],
            [0.9, 0.85, 0.8, 0.7],
        )
    ]
    # one positive; what counts is miss, hit: recall 0, 1 and precision 0, 1/2 -> AP 0.5
    assert dm.rotated_voc_ap50(preds, targets, ["car"])["AP50"] == pytest.approx(0.5)
    # without the flag: hit, duplicate, miss, hit over two positives
    plain = [_gt([car, hard_car], [0, 0])]
    assert dm.rotated_voc_ap50(preds, plain, ["car"])["AP50"] == pytest.approx(0.5 + 0.5 * 0.5)
    # a class with only difficult objects has no positives: NaN, left out of the mean
    only_hard = [{**_gt([hard_car], [1]), "difficult": np.array([1])}]
    res = dm.rotated_voc_ap50([_pred([hard_car], [1], [0.9])], only_hard, ["car", "bus"])
    assert math.isnan(res["per_class"]["bus"]) and math.isnan(res["AP50"])
    with pytest.raises(ValueError, match=r"difficult'\] must be 2 flags"):
        dm.rotated_voc_ap50(preds, [{**plain[0], "difficult": np.array([0])}], ["car"])
