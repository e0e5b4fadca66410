"""Pseudo-labels: a checkpoint's detections on each converted pair, as YOLO or DOTA label
lines, to bootstrap the annotation of recorded data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fusion_perception.pipeline import FramePipeline
from fusion_perception.registration import Registration
from fusion_perception.thermal import ThermalNormalizer


class PseudoLabeler:
    """Runs a checkpoint on each written pair and turns its detections into label lines
    (YOLO txt for horizontal models, DOTA txt for rotated ones) to bootstrap annotation.

    Thermal is normalized before registration, in pair order with the scheme's temporal state
    reset per bag, as the node feeds its model (with ``every`` > 1 the temporal state only
    sees the pairs that are written).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        normalization: ThermalNormalizer,
        device: str = "auto",
        score_threshold: float = 0.5,
    ) -> None:
        from fusion_perception.engine import FusionEngine

        self.checkpoint = Path(checkpoint)
        self.engine = FusionEngine(checkpoint, device=device, score_threshold=score_threshold)
        self.class_names = list(self.engine.class_names)
        self.label_format = "dota" if self.engine.rotated else "yolo"
        self.score_threshold = score_threshold
        normalizer = normalization.fresh_copy()
        self.pipeline = FramePipeline(self.engine, normalizer)
        self.objects = 0

    def reset(self) -> None:
        self.pipeline.reset()

    def label_lines(
        self, rgb: np.ndarray, thermal_raw: np.ndarray, registration: Registration | None
    ) -> list[str]:
        """rgb uint8 HxWx3; thermal_raw as decoded (before registration)."""
        self.pipeline.registration = registration
        detections = self.pipeline.run(rgb, thermal_raw).result.detections
        height, width = rgb.shape[:2]
        if self.label_format == "yolo":
            lines = yolo_lines(detections.boxes, detections.labels, width, height)
        else:
            lines = dota_lines(detections.boxes, detections.labels, self.class_names, width, height)
        self.objects += len(lines)
        return lines


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> list[str]:
    """Horizontal boxes [N,5] (cx, cy, w, h, 0) in pixels -> 'class cx cy w h' normalised."""
    scale = np.array([width, height, width, height], np.float64)
    return [
        f"{int(label)} " + " ".join(f"{v:.6f}" for v in np.asarray(box[:4], np.float64) / scale)
        for box, label in zip(boxes, labels, strict=True)
    ]


def dota_lines(
    boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], width: int, height: int
) -> list[str]:
    """Rotated boxes [N,5] in pixels -> 'x1 y1 ... x4 y4 class 0', corners clipped to the image
    (the loader rejects corners outside it); boxes left with < 1 px^2 are dropped."""
    import torch

    from fusion_perception.boxes import cxcywha_to_polygon

    if len(boxes) == 0:
        return []
    corners = cxcywha_to_polygon(torch.as_tensor(np.asarray(boxes), dtype=torch.float64)).numpy()
    corners[..., 0] = corners[..., 0].clip(0, width)
    corners[..., 1] = corners[..., 1].clip(0, height)
    lines = []
    for polygon, label in zip(corners, labels, strict=True):
        if cv2.contourArea(polygon.astype(np.float32)) < 1.0:
            continue
        name = class_names[int(label)].replace(" ", "_")
        lines.append(" ".join(f"{v:.2f}" for v in polygon.reshape(-1)) + f" {name} 0")
    return lines
