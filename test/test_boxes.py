"""Box conversions, exact rotated IoU (shapely as the oracle) and NMS."""

from __future__ import annotations

import math

import pytest
import torch
from shapely.geometry import Polygon
from torchvision.ops import batched_nms, box_iou

from fusion_perception.boxes import (
    box_iou_rotated,
    cxcywh_to_xyxy,
    cxcywha_to_polygon,
    enclosing_xyxy,
    nms,
    nms_horizontal,
    nms_rotated,
    normalize_angle,
    polygon_to_cxcywha,
    xyxy_to_cxcywh,
)


def random_boxes(n: int, seed: int, extent: float = 100.0, angle: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * extent
    sizes = torch.rand(n, 2, generator=g) * extent * 0.4 + 1.0
    angles = (torch.rand(n, 1, generator=g) - 0.5) * 2 * math.pi
    if not angle:
        angles.zero_()
    return torch.cat((centres, sizes, angles), dim=1).double()


def shapely_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    polys_a = [Polygon(p.tolist()) for p in cxcywha_to_polygon(a)]
    polys_b = [Polygon(p.tolist()) for p in cxcywha_to_polygon(b)]
    out = torch.zeros(len(polys_a), len(polys_b), dtype=torch.float64)
    for i, pa in enumerate(polys_a):
        for j, pb in enumerate(polys_b):
            inter = pa.intersection(pb).area
            out[i, j] = inter / (pa.area + pb.area - inter)
    return out


def test_horizontal_conversions_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 4.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    xyxy = cxcywh_to_xyxy(boxes)
    assert torch.equal(xyxy, torch.tensor([[8.0, 17.0, 12.0, 23.0], [-1.0, -1.0, 1.0, 1.0]]))
    assert torch.allclose(xyxy_to_cxcywh(xyxy), boxes)


def test_polygon_corners_follow_the_angle_convention():
    # angle pi/2 turns the box's x-axis onto the image's +y axis: a 4x2 box becomes 2 wide, 4 tall.
    box = torch.tensor([[10.0, 20.0, 4.0, 2.0, math.pi / 2]])
    corners = cxcywha_to_polygon(box)[0]
    assert torch.allclose(corners.min(0).values, torch.tensor([9.0, 18.0]), atol=1e-6)
    assert torch.allclose(corners.max(0).values, torch.tensor([11.0, 22.0]), atol=1e-6)
    # first edge runs along the box's x-axis, i.e. towards +y here
    edge = corners[1] - corners[0]
    assert torch.allclose(edge, torch.tensor([0.0, 4.0]), atol=1e-6)
    area = 0.5 * sum(
        corners[i, 0] * corners[(i + 1) % 4, 1] - corners[(i + 1) % 4, 0] * corners[i, 1]
        for i in range(4)
    )
    assert area == pytest.approx(8.0)  # positive shoelace area


def test_polygon_to_cxcywha_inverts_rectangles_in_any_corner_order():
    boxes = random_boxes(50, seed=1)
    polygons = cxcywha_to_polygon(boxes)
    for order in ([0, 1, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0], [0, 2, 1, 3]):
        back = polygon_to_cxcywha(polygons[:, order])
        assert back[:, 4].min() >= -math.pi / 2 and back[:, 4].max() < math.pi / 2
        assert torch.allclose(back[:, :2], boxes[:, :2], atol=1e-9)
        assert torch.allclose(back[:, 2] * back[:, 3], boxes[:, 2] * boxes[:, 3], atol=1e-7)
        assert torch.diagonal(box_iou_rotated(back, boxes)).min() > 1 - 1e-9
    # in the native order the box keeps its own w/h and its angle modulo pi
    back = polygon_to_cxcywha(polygons)
    assert torch.allclose(back[:, 2:4], boxes[:, 2:4], atol=1e-9)
    assert torch.sin(2 * (back[:, 4] - boxes[:, 4])).abs().max() < 1e-9


def test_polygon_to_cxcywha_gives_minimum_area_rectangle_of_quadrilaterals():
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        quad = Polygon((torch.rand(4, 2, generator=g) * 50).tolist()).convex_hull
        if len(quad.exterior.coords) != 5:  # keep genuine quadrilaterals
            continue
        points = torch.tensor(quad.exterior.coords[:4], dtype=torch.float64)[None]
        rect = polygon_to_cxcywha(points)
        expected = quad.minimum_rotated_rectangle.area
        assert float(rect[0, 2] * rect[0, 3]) == pytest.approx(expected, rel=1e-9)
        rect_poly = Polygon(cxcywha_to_polygon(rect)[0].tolist())
        assert rect_poly.buffer(1e-6).contains(quad)


def test_normalize_angle_range_and_equivalence():
    angles = torch.linspace(-10, 10, 1001, dtype=torch.float64)
    wrapped = normalize_angle(angles)
    assert wrapped.min() >= -math.pi / 2 and wrapped.max() < math.pi / 2
    assert torch.allclose(torch.sin(2 * wrapped), torch.sin(2 * angles), atol=1e-9)


def test_enclosing_xyxy_matches_polygon_extent():
    boxes = random_boxes(30, seed=3)
    corners = cxcywha_to_polygon(boxes)
    expected = torch.cat((corners.min(1).values, corners.max(1).values), dim=1)
    assert torch.allclose(enclosing_xyxy(boxes), expected, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rotated_iou_matches_shapely_on_random_boxes(dtype):
    a = random_boxes(40, seed=4).to(dtype)
    b = random_boxes(35, seed=5).to(dtype)
    ours = box_iou_rotated(a, b)
    reference = shapely_iou(a.double(), b.double())
    assert ours.dtype == dtype and ours.shape == (40, 35)
    assert (reference > 0).sum() > 50  # the sample really contains overlaps
    assert torch.allclose(ours.double(), reference, atol=1e-4)


def test_rotated_iou_special_configurations():
    base = torch.tensor([[50.0, 50.0, 40.0, 10.0, 0.3]], dtype=torch.float64)
    same = base.clone()
    flipped = base.clone()
    flipped[0, 4] += math.pi  # same rectangle
    swapped = torch.tensor([[50.0, 50.0, 10.0, 40.0, 0.3 + math.pi / 2]], dtype=torch.float64)
    crossing = torch.tensor([[50.0, 50.0, 40.0, 10.0, 0.3 + math.pi / 2]], dtype=torch.float64)
    inner = torch.tensor([[50.0, 50.0, 20.0, 5.0, 0.3]], dtype=torch.float64)
    far = torch.tensor([[150.0, 50.0, 40.0, 10.0, 0.3]], dtype=torch.float64)
    touching = torch.tensor([[50.0, 60.0, 40.0, 10.0, 0.0]], dtype=torch.float64)
    others = torch.cat((same, flipped, swapped, crossing, inner, far, touching))
    iou = box_iou_rotated(base, others)[0]
    # the cross is a 10x10 square: 100 / (400 + 400 - 100)
    touching_ref = shapely_iou(base, touching)[0, 0]
    expected = torch.tensor([1.0, 1.0, 1.0, 100.0 / 700.0, 100.0 / 400.0, 0.0, touching_ref])
    assert torch.allclose(iou, expected.double(), atol=1e-9)


def test_rotated_iou_at_angle_zero_equals_horizontal_iou():
    boxes = random_boxes(60, seed=6, angle=False)
    horizontal = box_iou(cxcywh_to_xyxy(boxes[:, :4]), cxcywh_to_xyxy(boxes[:, :4]))
    assert torch.allclose(box_iou_rotated(boxes, boxes), horizontal, atol=1e-9)


def test_rotated_iou_handles_empty_and_degenerate_inputs():
    assert box_iou_rotated(torch.zeros(0, 5), torch.zeros(3, 5)).shape == (0, 3)
    degenerate = torch.tensor([[10.0, 10.0, 0.0, 5.0, 0.2], [10.0, 10.0, 0.0, 5.0, 0.2]])
    assert torch.equal(box_iou_rotated(degenerate, degenerate), torch.zeros(2, 2))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_rotated_nms_equals_horizontal_nms_at_angle_zero(threshold):
    boxes = random_boxes(300, seed=7, angle=False)
    g = torch.Generator().manual_seed(8)
    scores = torch.rand(300, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (300,), generator=g)
    expected = batched_nms(cxcywh_to_xyxy(boxes[:, :4]), scores, labels, threshold)
    kept = nms_rotated(boxes, scores, labels, threshold)
    assert 0 < kept.numel() < 300
    assert torch.equal(kept, expected)
    assert torch.equal(nms_horizontal(boxes, scores, labels, threshold), expected)


def test_rotated_nms_uses_rotated_overlap_and_classes():
    # Two thin boxes crossing at right angles: their horizontal extents overlap a lot,
    # their true overlap is small. A near-duplicate of the first one must go.
    boxes = torch.tensor(
        [
            [50.0, 50.0, 60.0, 6.0, math.pi / 4],
            [50.0, 50.0, 60.0, 6.0, -math.pi / 4],
            [51.0, 50.0, 60.0, 6.0, math.pi / 4 + 0.02],
            [50.0, 50.0, 60.0, 6.0, math.pi / 4],
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    assert nms(boxes, scores, labels, 0.5, rotated=True).tolist() == [0, 1, 3]
    assert nms(boxes, scores, labels, 0.5, rotated=False).tolist() == [0, 3]


def test_rotated_nms_returns_indices_by_decreasing_score():
    boxes = random_boxes(80, seed=9)
    scores = torch.rand(80, generator=torch.Generator().manual_seed(10)).double()
    labels = torch.zeros(80, dtype=torch.int64)
    kept = nms_rotated(boxes, scores, labels, 0.4)
    assert kept.dtype == torch.int64
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])
    survivors = boxes[kept]
    iou = box_iou_rotated(survivors, survivors).fill_diagonal_(0)
    assert iou.max() <= 0.4
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0), 0.5).numel() == 0


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="boxes1"):
        box_iou_rotated(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 5), torch.zeros(2), torch.zeros(3), 0.5, rotated=True)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3), 1.5, rotated=False)
    with pytest.raises(ValueError, match="polygons"):
        polygon_to_cxcywha(torch.zeros(3, 5, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_rotated_iou_and_nms_run_on_cuda():
    boxes = random_boxes(50, seed=11)
    scores = torch.rand(50, dtype=torch.float64)
    labels = torch.zeros(50, dtype=torch.int64)
    iou = box_iou_rotated(boxes.cuda(), boxes.cuda())
    assert torch.allclose(iou.cpu(), box_iou_rotated(boxes, boxes))
    kept = nms_rotated(boxes.cuda(), scores.cuda(), labels.cuda(), 0.5)
    assert torch.equal(kept.cpu(), nms_rotated(boxes, scores, labels, 0.5))
