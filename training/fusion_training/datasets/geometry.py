"""Box geometry shared by the dataset loaders and the augmentation (numpy, float32 in and out).

Boxes are ``[N, 5]`` = (cx, cy, w, h, angle) in pixels, where pixel (i, j) covers
[i, i+1) x [j, j+1); the angle (radians) rotates the box's x-axis towards the image's +y axis
(OpenCV minAreaRect style), as in :mod:`fusion_perception.boxes`. Horizontal datasets keep angle 0.
Oriented boxes are stored in one canonical form, :func:`canonical_rotated` (w >= h, angle in
[-pi/2, pi/2)), so equal boxes always have equal parameters.
"""

from __future__ import annotations

import numpy as np
import shapely
import torch

from fusion_perception.boxes import cxcywha_to_polygon, polygon_to_cxcywha


def canonical_rotated(boxes: np.ndarray) -> np.ndarray:
    """Oriented boxes [N, 5] with the long side along the angle: w >= h, angle in [-pi/2, pi/2)."""
    out = np.array(boxes, dtype=np.float32).reshape(-1, 5)
    swap = out[:, 2] < out[:, 3]
    out[swap, 2], out[swap, 3] = out[swap, 3], out[swap, 2].copy()
    out[swap, 4] += np.float32(np.pi / 2)
    out[:, 4] = np.remainder(out[:, 4] + np.pi / 2, np.pi) - np.pi / 2
    return out


def polygons_to_boxes(polygons: np.ndarray) -> np.ndarray:
    """Quadrilaterals [N, 4, 2] (x, y) -> minimum-area oriented boxes [N, 5], canonical form."""
    polygons = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    if len(polygons) == 0:
        return np.zeros((0, 5), np.float32)
    boxes = polygon_to_cxcywha(torch.from_numpy(polygons)).numpy()
    return canonical_rotated(boxes)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Boxes [N, 5] -> corners [N, 4, 2] in float64 (order as in fusion_perception.boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    return cxcywha_to_polygon(torch.from_numpy(boxes)).numpy()


def affine_boxes(
    boxes: np.ndarray,
    matrix: np.ndarray,
    clip: tuple[float, float, float, float],
    rotated: bool,
    min_visible: float = 0.0,
    min_size: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Map boxes through an affine transform, clip them to a rectangle and refit them.

    matrix: 2x3, maps input pixel coordinates to output ones (continuous convention above).
    clip: (x0, y0, x1, y1) region of the output that holds image content. Each mapped box is
    intersected with it; boxes keeping less than ``min_visible`` of their mapped area, or with a
    side shorter than ``min_size`` pixels afterwards, are dropped. The result encloses the
    visible part tightly along the box's own (mapped) x-axis, so a clipped object keeps its
    orientation; horizontal boxes (``rotated=False``) stay horizontal with angle 0.
    Returns (boxes float32 [M, 5], keep bool [N]) where M = keep.sum().
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    x0, y0, x1, y1 = (float(v) for v in clip)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"clip must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {clip}")
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 5), np.float32), np.zeros(0, bool)
    linear, shift = matrix[:, :2], matrix[:, 2]
    if not rotated:
        boxes = boxes.copy()
        boxes[:, 4] = 0.0
    corners = box_corners(boxes) @ linear.T + shift  # [N, 4, 2]
    if rotated:
        axis = np.stack([np.cos(boxes[:, 4]), np.sin(boxes[:, 4])], axis=1) @ linear.T
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    else:
        axis = np.tile([1.0, 0.0], (n, 1))
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
    full_area = boxes[:, 2] * boxes[:, 3] * abs(np.linalg.det(linear))
    clipped = shapely.clip_by_rect(shapely.polygons(corners), x0, y0, x1, y1)
    area = shapely.area(clipped)
    points, owner = shapely.get_coordinates(clipped, return_index=True)
    keep = area > np.maximum(min_visible * full_area, 1e-9)
    if len(points) == 0:
        return np.zeros((0, 5), np.float32), np.zeros(n, bool)
    along = np.einsum("pc,pc->p", points, axis[owner])
    across = np.einsum("pc,pc->p", points, normal[owner])
    lo_a, hi_a = np.full(n, np.inf), np.full(n, -np.inf)
    lo_b, hi_b = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo_a, owner, along)
    np.maximum.at(hi_a, owner, along)
    np.minimum.at(lo_b, owner, across)
    np.maximum.at(hi_b, owner, across)
    empty = ~np.isfinite(lo_a)  # nothing of the box is left in the clip region
    for extent in (lo_a, hi_a, lo_b, hi_b):
        extent[empty] = 0.0
    width, height = hi_a - lo_a, hi_b - lo_b
    keep &= ~empty & (width >= min_size) & (height >= min_size)
    mid_a, mid_b = (lo_a + hi_a) / 2, (lo_b + hi_b) / 2
    centre = mid_a[:, None] * axis + mid_b[:, None] * normal
    angle = np.arctan2(axis[:, 1], axis[:, 0])
    out = np.stack([centre[:, 0], centre[:, 1], width, height, angle], axis=1)[keep]
    out = canonical_rotated(out) if rotated else out.astype(np.float32)
    return out, keep
