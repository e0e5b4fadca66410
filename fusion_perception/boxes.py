"""Box formats, exact rotated-box IoU and NMS, in torch (any device).

Box conventions used across the package:

* ``cxcywha``: float ``[N, 5]`` = (cx, cy, w, h, angle) in pixels, angle in radians. The angle rotates
  the box's x-axis towards the image's +y axis (OpenCV ``minAreaRect`` style), so the box's own
  axes in image coordinates are ``ex = (cos a, sin a)`` and ``ey = (-sin a, cos a)``. A box and the
  same box rotated by pi are identical; :func:`normalize_angle` picks the representative in
  ``[-pi/2, pi/2)``. Horizontal boxes have angle 0.
* ``cxcywh`` / ``xyxy``: float ``[N, 4]`` horizontal boxes in pixels.
* polygon: float ``[N, 4, 2]`` corners (x, y), ordered so that the shoelace area is positive.

The rotated IoU is the exact area of the convex intersection polygon (not a Gaussian proxy such as
probiou), so it agrees with shapely and with the DOTA / mmrotate evaluators.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert

__all__ = [
    "box_iou_rotated",
    "cxcywh_to_xyxy",
    "cxcywha_to_polygon",
    "enclosing_xyxy",
    "nms",
    "nms_horizontal",
    "nms_rotated",
    "normalize_angle",
    "polygon_to_cxcywha",
    "xyxy_to_cxcywh",
]

# Pairs per chunk in the exact intersection; bounds peak memory to a few tens of MB.
_PAIR_CHUNK = 65536
# Geometric slack (pixels) for point-in-box and segment tests, computed in float64.
_EPS = 1e-9


def _check_boxes(boxes: Tensor, name: str, width: int) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != width:
        raise ValueError(f"{name} must have shape [N, {width}], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {boxes.dtype}")


def normalize_angle(angle: Tensor) -> Tensor:
    """Wrap angles (radians) to ``[-pi/2, pi/2)``; a rectangle is unchanged by a rotation of pi."""
    return torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Horizontal ``[N, 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    _check_boxes(boxes, "boxes", 4)
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Horizontal ``[N, 4]`` (x1, y1, x2, y2) -> (cx, cy, w, h)."""
    _check_boxes(boxes, "boxes", 4)
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def _box_axes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Unit x- and y-axes of each box in image coordinates, each ``[..., 2]``."""
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    return torch.stack((cos, sin), dim=-1), torch.stack((-sin, cos), dim=-1)


def cxcywha_to_polygon(boxes: Tensor) -> Tensor:
    """Rotated boxes ``[N, 5]`` -> corners ``[N, 4, 2]``.

    Corner order in the box's own frame: (-w/2, -h/2), (+w/2, -h/2), (+w/2, +h/2), (-w/2, +h/2).
    """
    _check_boxes(boxes, "boxes", 5)
    ex, ey = _box_axes(boxes)
    half_w = (boxes[:, 2] / 2)[:, None, None] * ex[:, None, :]
    half_h = (boxes[:, 3] / 2)[:, None, None] * ey[:, None, :]
    signs_w = boxes.new_tensor([-1.0, 1.0, 1.0, -1.0])[None, :, None]
    signs_h = boxes.new_tensor([-1.0, -1.0, 1.0, 1.0])[None, :, None]
    return boxes[:, None, :2] + signs_w * half_w + signs_h * half_h  # [N, 4, 2]


def polygon_to_cxcywha(polygons: Tensor) -> Tensor:
    """Four points per box ``[N, 4, 2]`` -> minimum-area rotated rectangle ``[N, 5]``.

    Exact for rectangles in any corner order (round trip of :func:`cxcywha_to_polygon`, up to the
    equivalent (h, w, angle + pi/2) form) and the minimum-area enclosing rectangle for any other
    quadrilateral (e.g. DOTA / DroneVehicle labels). The angle is in ``[-pi/2, pi/2)``.
    """
    if not isinstance(polygons, Tensor) or polygons.dim() != 3 or polygons.shape[1:] != (4, 2):
        shape = tuple(polygons.shape) if isinstance(polygons, Tensor) else type(polygons).__name__
        raise ValueError(f"polygons must be a tensor of shape [N, 4, 2], got {shape}")
    # One side of a minimum-area rectangle lies along a hull edge; the six point pairs contain
    # every hull edge whatever the corner order.
    first = torch.tensor([0, 1, 2, 3, 0, 1], device=polygons.device)
    second = torch.tensor([1, 2, 3, 0, 2, 3], device=polygons.device)
    direction = polygons[:, second] - polygons[:, first]  # [N, 6, 2]
    theta = torch.atan2(direction[..., 1], direction[..., 0])  # [N, 6]
    ex = torch.stack((torch.cos(theta), torch.sin(theta)), dim=-1)  # [N, 6, 2]
    ey = torch.stack((-torch.sin(theta), torch.cos(theta)), dim=-1)
    u = torch.einsum("npc,nkc->nkp", polygons, ex)  # [N, 6, 4] coordinates along ex
    v = torch.einsum("npc,nkc->nkp", polygons, ey)
    u_min, u_max = u.min(dim=2).values, u.max(dim=2).values  # [N, 6]
    v_min, v_max = v.min(dim=2).values, v.max(dim=2).values
    area = (u_max - u_min) * (v_max - v_min)
    # First candidate within rounding of the minimum, so exact rectangles keep their own w/h order.
    tolerance = area.min(dim=1, keepdim=True).values * (1 + 1e-6) + 1e-12
    best = (area <= tolerance).to(torch.uint8).argmax(dim=1, keepdim=True)  # [N, 1]

    def pick(t: Tensor) -> Tensor:
        return t.gather(1, best).squeeze(1)

    centre_u = (pick(u_min) + pick(u_max)) / 2
    centre_v = (pick(v_min) + pick(v_max)) / 2
    ex_b = ex.gather(1, best[..., None].expand(-1, -1, 2)).squeeze(1)  # [N, 2]
    ey_b = ey.gather(1, best[..., None].expand(-1, -1, 2)).squeeze(1)
    centre = centre_u[:, None] * ex_b + centre_v[:, None] * ey_b
    width = pick(u_max) - pick(u_min)
    height = pick(v_max) - pick(v_min)
    angle = normalize_angle(pick(theta))
    return torch.stack((centre[:, 0], centre[:, 1], width, height, angle), dim=1)


def enclosing_xyxy(boxes: Tensor) -> Tensor:
    """Smallest horizontal (x1, y1, x2, y2) box ``[N, 4]`` containing each rotated box ``[N, 5]``."""
    _check_boxes(boxes, "boxes", 5)
    cos, sin = torch.cos(boxes[:, 4]).abs(), torch.sin(boxes[:, 4]).abs()
    half_x = (boxes[:, 2] * cos + boxes[:, 3] * sin) / 2
    half_y = (boxes[:, 2] * sin + boxes[:, 3] * cos) / 2
    return torch.stack(
        (boxes[:, 0] - half_x, boxes[:, 1] - half_y, boxes[:, 0] + half_x, boxes[:, 1] + half_y),
        dim=1,
    )


def _points_in_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """``points [P, K, 2]`` inside (or on) ``boxes [P, 5]`` -> bool ``[P, K]``."""
    ex, ey = _box_axes(boxes)
    offset = points - boxes[:, None, :2]
    u = (offset * ex[:, None, :]).sum(-1)
    v = (offset * ey[:, None, :]).sum(-1)
    tol_w = boxes[:, 2:3] / 2 + _EPS * (1 + boxes[:, 2:3])
    tol_h = boxes[:, 3:4] / 2 + _EPS * (1 + boxes[:, 3:4])
    return (u.abs() <= tol_w) & (v.abs() <= tol_h)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _intersection_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Exact area of ``boxes1[i] & boxes2[i]`` for aligned pairs ``[P, 5]`` -> ``[P]``.

    The intersection of two convex polygons is convex, and its vertices are the corners of each
    box inside the other plus the edge/edge crossings. Sorting those (at most 24) candidates by
    angle around their mean and applying the shoelace formula gives the area without a
    sequential clipping loop.
    """
    poly1, poly2 = cxcywha_to_polygon(boxes1), cxcywha_to_polygon(boxes2)  # [P, 4, 2]
    inside1 = _points_in_boxes(poly1, boxes2)  # [P, 4]
    inside2 = _points_in_boxes(poly2, boxes1)

    start1, start2 = poly1[:, :, None, :], poly2[:, None, :, :]  # edges as start + t * dir
    dir1 = (poly1.roll(-1, dims=1) - poly1)[:, :, None, :]  # [P, 4, 1, 2]
    dir2 = (poly2.roll(-1, dims=1) - poly2)[:, None, :, :]  # [P, 1, 4, 2]
    denom = _cross(dir1, dir2)  # [P, 4, 4]
    delta = start2 - start1
    parallel = denom.abs() <= _EPS * (1 + dir1.norm(dim=-1) * dir2.norm(dim=-1))
    safe = torch.where(parallel, torch.ones_like(denom), denom)
    t = _cross(delta, dir2) / safe
    s = _cross(delta, dir1) / safe
    crossing = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (s >= -_EPS) & (s <= 1 + _EPS)
    crossing_points = start1 + t[..., None] * dir1  # [P, 4, 4, 2]

    candidates = torch.cat((poly1, poly2, crossing_points.flatten(1, 2)), dim=1)  # [P, 24, 2]
    valid = torch.cat((inside1, inside2, crossing.flatten(1, 2)), dim=1)  # [P, 24]
    count = valid.sum(dim=1)  # [P]
    weights = valid.to(candidates.dtype)[..., None]
    centre = (candidates * weights).sum(1) / count.clamp(min=1)[:, None].to(candidates.dtype)
    rel = candidates - centre[:, None, :]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 4 * math.pi))  # invalid sort last
    order = angle.argsort(dim=1)
    ordered = rel.gather(1, order[..., None].expand(-1, -1, 2))  # [P, 24, 2]
    # Pad the tail with the first vertex: repeated points add zero area and close the polygon.
    slot = torch.arange(ordered.shape[1], device=ordered.device)[None, :]
    ordered = torch.where((slot < count[:, None])[..., None], ordered, ordered[:, :1, :])
    area = _cross(ordered, ordered.roll(-1, dims=1)).sum(dim=1).abs() / 2
    return torch.where(count >= 3, area, torch.zeros_like(area))


def _overlap_candidates(boxes1: Tensor, boxes2: Tensor, pair_mask: Tensor | None) -> Tensor:
    """Index pairs ``[K, 2]`` whose circumscribed circles overlap (and ``pair_mask`` allows)."""
    radius1 = torch.hypot(boxes1[:, 2], boxes1[:, 3]) / 2
    radius2 = torch.hypot(boxes2[:, 2], boxes2[:, 3]) / 2
    distance = torch.cdist(boxes1[:, :2], boxes2[:, :2])  # [N, M]
    close = distance <= (radius1[:, None] + radius2[None, :]) * (1 + 1e-6) + 1e-6
    if pair_mask is not None:
        close &= pair_mask
    return close.nonzero()


def _pair_iou(boxes1: Tensor, boxes2: Tensor, pairs: Tensor) -> Tensor:
    """IoU ``[K]`` of ``boxes1[pairs[:, 0]]`` with ``boxes2[pairs[:, 1]]`` (float64 inside)."""
    b1 = boxes1.to(torch.float64)
    b2 = boxes2.to(torch.float64)
    area1 = b1[:, 2] * b1[:, 3]
    area2 = b2[:, 2] * b2[:, 3]
    ious = []
    for chunk in pairs.split(_PAIR_CHUNK):
        i, j = chunk[:, 0], chunk[:, 1]
        inter = _intersection_area(b1[i], b2[j])
        union = area1[i] + area2[j] - inter
        ious.append(torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter)))
    if not ious:
        return boxes1.new_zeros(0, dtype=torch.float64)
    return torch.cat(ious)


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Exact pairwise IoU of rotated boxes ``[N, 5]`` x ``[M, 5]`` -> ``[N, M]`` (dtype of boxes1).

    Only pairs whose circumscribed circles overlap are intersected, so sparse scenes stay cheap.
    Boxes with zero area have IoU 0 with everything.
    """
    _check_boxes(boxes1, "boxes1", 5)
    _check_boxes(boxes2, "boxes2", 5)
    iou = boxes1.new_zeros(boxes1.shape[0], boxes2.shape[0])
    if iou.numel() == 0:
        return iou
    pairs = _overlap_candidates(boxes1, boxes2, None)
    iou[pairs[:, 0], pairs[:, 1]] = _pair_iou(boxes1, boxes2, pairs).to(iou.dtype)
    return iou


def _check_nms_inputs(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> None:
    _check_boxes(boxes, "boxes", 5)
    n = boxes.shape[0]
    if not isinstance(scores, Tensor) or scores.shape != (n,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor of shape [{n}], got {shape}")
    if not isinstance(labels, Tensor) or labels.shape != (n,):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape [{n}], got {shape}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")


def nms_horizontal(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS on the horizontal (cx, cy, w, h) part of ``[N, 5]`` boxes (angle ignored).

    Returns int64 indices of kept boxes sorted by decreasing score (torchvision ``batched_nms``).
    """
    _check_nms_inputs(boxes, scores, labels, iou_threshold)
    return batched_nms(cxcywh_to_xyxy(boxes[:, :4]), scores, labels, float(iou_threshold))


def nms_rotated(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Greedy class-aware NMS on exact rotated IoU.

    A box is removed when its IoU with a higher-scoring kept box of the same label is
    ``> iou_threshold`` (the torchvision rule). The IoU matrix is computed in one vectorised pass;
    only the greedy sweep over the boolean overlap matrix is sequential. Returns int64 indices of
    kept boxes sorted by decreasing score.
    """
    _check_nms_inputs(boxes, scores, labels, iou_threshold)
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True)
    sorted_boxes, sorted_labels = boxes[order], labels[order]
    rank = torch.arange(n, device=boxes.device)
    later_same_class = (sorted_labels[:, None] == sorted_labels[None, :]) & (
        rank[:, None] < rank[None, :]
    )
    pairs = _overlap_candidates(sorted_boxes, sorted_boxes, later_same_class)
    iou = _pair_iou(sorted_boxes, sorted_boxes, pairs)
    hits = pairs[iou > iou_threshold].cpu().numpy()
    overlaps = np.zeros((n, n), dtype=bool)
    overlaps[hits[:, 0], hits[:, 1]] = True
    removed = np.zeros(n, dtype=bool)
    kept = []
    for i in range(n):
        if not removed[i]:
            kept.append(i)
            removed |= overlaps[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=boxes.device)]


def nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, rotated: bool
) -> Tensor:
    """Class-aware NMS on ``[N, 5]`` boxes: exact rotated IoU if ``rotated``, else horizontal.

    Returns int64 indices of kept boxes sorted by decreasing score.
    """
    if rotated:
        return nms_rotated(boxes, scores, labels, iou_threshold)
    return nms_horizontal(boxes, scores, labels, iou_threshold)
