"""Target contrast: how much labelled objects stand out of their surroundings in an image.

For each box, the mean intensity inside it minus the mean intensity of a ring around it (the
box grown by ``ring`` of its width and height on every side, minus the box), in [0, 1] units. An
operator watching the fused feed at night needs people to stand out at least as much as they do
in thermal; comparing the fused image's contrast with the thermal and visible ones on the same
boxes says how much of thermal's target contrast the fusion kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

RING = 0.5  # ring width, as a share of the box's width / height


def box_contrasts(image: np.ndarray, boxes: np.ndarray, ring: float = RING) -> list[float]:
    """Per-box contrast of an HxW image (uint8 or float in [0, 1]); boxes ``[N, >=4]`` as
    (cx, cy, w, h, ...) in pixels. Boxes with no pixel inside or no ring (a box covering the
    image) are skipped."""
    values = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    height, width = values.shape
    out = []
    for cx, cy, w, h in np.asarray(boxes, np.float64)[:, :4].tolist():
        inner = _window(cx, cy, w, h, width, height)
        outer = _window(cx, cy, w * (1 + 2 * ring), h * (1 + 2 * ring), width, height)
        if inner is None or outer is None:
            continue
        (x1, y1, x2, y2), (ox1, oy1, ox2, oy2) = inner, outer
        inside = values[y1:y2, x1:x2]
        around = values[oy1:oy2, ox1:ox2].sum() - inside.sum()
        ring_pixels = (ox2 - ox1) * (oy2 - oy1) - inside.size
        if ring_pixels <= 0:
            continue
        out.append(float(inside.mean() - around / ring_pixels))
    return out


def _window(
    cx: float, cy: float, w: float, h: float, width: int, height: int
) -> tuple[int, int, int, int] | None:
    x1, y1 = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
    x2, y2 = min(width, round(cx + w / 2)), min(height, round(cy + h / 2))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def mean_contrast(images: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean per-box contrast over (image, boxes) pairs (NaN when no box counts)."""
    values = [c for image, boxes in images for c in box_contrasts(image, boxes)]
    return float(np.mean(values)) if values else float("nan")


def contrast_report(
    fused: Mapping[str, np.ndarray],
    sources: Mapping[str, Mapping[str, np.ndarray]],
    classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """``fused``/``thermal``/``visible`` mean contrast over the same boxes, and fused/thermal.

    ``sources[name]`` holds ``visible`` (HxW luma), ``thermal`` (HxW) and ``boxes``/``labels``;
    ``classes`` keeps only those labels (None: every box)."""

    def kept(name: str) -> np.ndarray:
        boxes, labels = sources[name]["boxes"], sources[name]["labels"]
        return boxes if classes is None else boxes[np.isin(labels, classes)]

    report = {
        what: mean_contrast((images[name], kept(name)) for name in fused)
        for what, images in (
            ("fused", fused),
            ("thermal", {n: sources[n]["thermal"] for n in fused}),
            ("visible", {n: sources[n]["visible"] for n in fused}),
        )
    }
    report["fused_to_thermal"] = report["fused"] / report["thermal"]
    return report
