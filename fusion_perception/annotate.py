"""Draw detections (horizontal or rotated) on an image for rviz, `fusion-infer` and the demo."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from fusion_perception.boxes import cxcywha_to_polygon
from fusion_perception.engine import Detections


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class (golden-angle hue steps)."""
    hue = int((class_id * 137.508) % 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(
    image: np.ndarray, detections: Detections, class_names: Sequence[str], thickness: int = 2
) -> np.ndarray:
    """Return a copy of `image` (uint8 HxWx3, any channel order is drawn as RGB) with boxes and labels."""
    out = np.ascontiguousarray(image).copy()
    polygons = cxcywha_to_polygon(torch.as_tensor(detections.boxes, dtype=torch.float64)).numpy()
    ids = detections.ids if detections.ids is not None else np.full(len(detections), -1)
    rows = zip(polygons, detections.scores, detections.labels, ids, strict=True)
    for polygon, score, label, track in rows:
        colour = class_colour(int(label))
        corners = np.round(polygon).astype(np.int32)
        cv2.polylines(out, [corners], isClosed=True, color=colour, thickness=thickness)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} #{track} {score:.2f}" if track >= 0 else f"{name} {score:.2f}"
        x, y = corners[:, 0].min(), corners[:, 1].min()
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        y_text = max(int(y), th + base)
        cv2.rectangle(out, (int(x), y_text - th - base), (int(x) + tw, y_text), colour, -1)
        cv2.putText(
            out, text, (int(x), y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
    return out
