"""Anchor-free (FCOS-style) dense detection head for horizontal and rotated boxes.

Every feature location ``p`` (cell centre, ``(j + 0.5, i + 0.5) * stride`` in input pixels) predicts
class logits, the distances (l, t, r, b) from ``p`` to the box sides measured along the box's own
axes (stride units), a centre-ness logit and, for rotated boxes, ``(sin 2a, cos 2a)`` of the box
angle. The doubled angle makes the prediction identical for a box and the same box rotated by pi.

Targets: a location is positive for a ground-truth box when it lies inside the (rotated) box, within
``center_sampling_radius * stride`` of its centre along both box axes, and max(l, t, r, b) is in the
level's scale range; ties go to the smallest box. A box left without any positive location keeps the
inside location nearest to its centre. None of this needs a rotated IoU.

For rotated boxes the regression targets are measured in the box frame (angle or angle + pi) closest
to the predicted angle, so decoding with the predicted angle is always consistent with the target
(otherwise boxes with an angle near +-pi/2 would flip between l/r- and t/b-swapped targets).

Losses (`compute_loss`) are sums over locations divided by ``max(1, num_positive)``: sigmoid focal
classification over all locations; SmoothL1 on stride-normalised (l, t, r, b) or GIoU; centre-ness
BCE; SmoothL1 on (sin 2a, cos 2a). Every box term is exactly 0 when there is no object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..boxes import cxcywh_to_xyxy, nms, normalize_angle, xyxy_to_cxcywh
from ..score_calibration import ScoreCalibration
from .config import DetectionHeadConfig

__all__ = ["DetectionHead", "Detections"]

Detections = dict[str, Tensor]


class Scale(nn.Module):
    """A learnable scalar multiplier (one per level, as in FCOS)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(in_channels: int, channels: int, num_convs: int, groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _flatten(x: Tensor) -> Tensor:
    """``[B, K, h, w]`` -> ``[B, h * w, K]`` (row-major locations)."""
    return x.flatten(2).transpose(1, 2)


def _box_frame(angle: Tensor) -> tuple[Tensor, Tensor]:
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack((cos, sin), dim=-1), torch.stack((-sin, cos), dim=-1)


def _centreness(ltrb: Tensor) -> Tensor:
    """FCOS centre-ness of distances ``[..., 4]`` (>= 0) -> ``[...]`` in [0, 1]."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio_lr = lr.min(dim=-1).values / lr.max(dim=-1).values.clamp(min=1e-6)
    ratio_tb = tb.min(dim=-1).values / tb.max(dim=-1).values.clamp(min=1e-6)
    return torch.sqrt((ratio_lr * ratio_tb).clamp(min=0.0))


class DetectionHead(nn.Module):
    """Dense head shared by all levels of width ``in_channels``.

    ``forward(levels)`` returns flattened dense outputs over all ``N`` locations (levels in
    order, row-major within a level):

    * ``cls_logits`` ``[B, N, num_classes]``
    * ``bbox_reg`` ``[B, N, 4]`` (l, t, r, b) >= 0 in stride units
    * ``ctrness`` ``[B, N]`` centre-ness logits
    * ``angle`` ``[B, N, 2]`` (sin 2a, cos 2a), rotated heads only
    * ``boxes`` ``[B, N, 5]`` decoded (cx, cy, w, h, angle) in input pixels
    """

    def __init__(self, cfg: DetectionHeadConfig, in_channels: int) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.rotated = cfg.rotated
        self.strides = tuple(cfg.strides)
        self.level_ranges = cfg.level_ranges()
        self.center_sampling_radius = cfg.center_sampling_radius
        self.box_loss = cfg.box_loss
        self.smooth_l1_beta = cfg.smooth_l1_beta
        self.focal_alpha = cfg.focal_alpha
        self.focal_gamma = cfg.focal_gamma
        self.pre_nms_top_k = cfg.pre_nms_top_k

        self.cls_tower = _tower(in_channels, cfg.channels, cfg.num_convs, cfg.norm_groups)
        self.reg_tower = _tower(in_channels, cfg.channels, cfg.num_convs, cfg.norm_groups)
        width = cfg.channels if cfg.num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(width, cfg.num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(width, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(width, 1, 3, padding=1)
        self.angle = nn.Conv2d(width, 2, 3, padding=1) if cfg.rotated else None
        self.scales = nn.ModuleList(Scale() for _ in cfg.strides)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        prior = cfg.prior_probability
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    # ------------------------------------------------------------------ dense forward

    def forward(self, levels: Sequence[Tensor]) -> dict[str, Tensor]:
        cls_logits, bbox_reg, ctrness, angle = [], [], [], []
        for level, scale in zip(levels, self.scales, strict=True):
            cls_feature, reg_feature = self.cls_tower(level), self.reg_tower(level)
            cls_logits.append(_flatten(self.cls_logits(cls_feature)))
            bbox_reg.append(_flatten(F.softplus(scale(self.bbox_reg(reg_feature)))))
            ctrness.append(_flatten(self.ctrness(reg_feature)))
            if self.angle is not None:
                angle.append(_flatten(self.angle(reg_feature)))
        out = {
            "cls_logits": torch.cat(cls_logits, dim=1),  # [B, N, C]
            "bbox_reg": torch.cat(bbox_reg, dim=1),  # [B, N, 4]
            "ctrness": torch.cat(ctrness, dim=1).squeeze(2),  # [B, N]
        }
        if self.angle is not None:
            out["angle"] = torch.cat(angle, dim=1)  # [B, N, 2]
        sizes = [(level.shape[-2], level.shape[-1]) for level in levels]
        points, strides = self.locations(sizes, levels[0].device, levels[0].dtype)
        out["boxes"] = self.decode(out["bbox_reg"], out.get("angle"), points, strides)
        return out

    def locations(
        self, sizes: Sequence[tuple[int, int]], device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Location centres ``[N, 2]`` (x, y) in input pixels and their strides ``[N]``."""
        points, strides = [], []
        for (h, w), stride in zip(sizes, self.strides, strict=True):
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((grid_x.flatten(), grid_y.flatten()), dim=1))
            strides.append(torch.full((h * w,), float(stride), device=device, dtype=dtype))
        return torch.cat(points), torch.cat(strides)

    def level_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map sizes ``(h, w)`` of each level for an ``(H, W)`` input."""
        height, width = image_size
        return [(height // s, width // s) for s in self.strides]

    def decode(
        self, bbox_reg: Tensor, angle: Tensor | None, points: Tensor, strides: Tensor
    ) -> Tensor:
        """Distances ``[B, N, 4]`` (stride units) and angle ``[B, N, 2]`` -> boxes ``[B, N, 5]``."""
        ltrb = bbox_reg * strides[None, :, None]
        half_dx = (ltrb[..., 2] - ltrb[..., 0]) / 2
        half_dy = (ltrb[..., 3] - ltrb[..., 1]) / 2
        width = ltrb[..., 0] + ltrb[..., 2]
        height = ltrb[..., 1] + ltrb[..., 3]
        if angle is None:
            theta = torch.zeros_like(width)
            cx = points[None, :, 0] + half_dx
            cy = points[None, :, 1] + half_dy
        else:
            theta = 0.5 * torch.atan2(angle[..., 0], angle[..., 1])
            cos, sin = torch.cos(theta), torch.sin(theta)
            cx = points[None, :, 0] + cos * half_dx - sin * half_dy
            cy = points[None, :, 1] + sin * half_dx + cos * half_dy
        return torch.stack((cx, cy, width, height, theta), dim=-1)

    # ------------------------------------------------------------------ training targets

    def _check_targets(self, targets: Sequence[dict[str, Tensor]], batch: int) -> None:
        if not isinstance(targets, Sequence) or len(targets) != batch:
            count = len(targets) if isinstance(targets, Sequence) else type(targets).__name__
            raise ValueError(
                f"targets must be a list of {batch} dicts (one per image), got {count}"
            )
        for i, target in enumerate(targets):
            if not isinstance(target, Mapping):
                raise ValueError(f"targets[{i}] must be a dict, got {type(target).__name__}")
            boxes, labels = target.get("boxes"), target.get("labels")
            if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
                shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else boxes
                raise ValueError(
                    f"targets[{i}]['boxes'] must be a float tensor [n, 5], got {shape}"
                )
            if not boxes.is_floating_point():
                raise ValueError(f"targets[{i}]['boxes'] must be floating point, got {boxes.dtype}")
            if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],):
                shape = tuple(labels.shape) if isinstance(labels, Tensor) else labels
                raise ValueError(
                    f"targets[{i}]['labels'] must be an int64 tensor [{boxes.shape[0]}], got {shape}"
                )
            if labels.dtype != torch.int64:
                raise ValueError(f"targets[{i}]['labels'] must be int64, got {labels.dtype}")
            if boxes.shape[0] == 0:
                continue
            if not torch.isfinite(boxes).all():
                raise ValueError(f"targets[{i}]['boxes'] contains non-finite values")
            bad = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
            if bad.any():
                index = int(bad.nonzero()[0])
                raise ValueError(
                    f"targets[{i}]['boxes'][{index}] = {boxes[index].tolist()} has w or h <= 0"
                )
            if not self.rotated and (boxes[:, 4] != 0).any():
                index = int((boxes[:, 4] != 0).nonzero()[0])
                raise ValueError(
                    f"targets[{i}]['boxes'][{index}] = {boxes[index].tolist()} has a non-zero "
                    "angle but the detection head is horizontal (detection_head.rotated: false)"
                )
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(
                    f"targets[{i}]['labels'] must be in [0, {self.num_classes - 1}], "
                    f"got values {labels.unique().tolist()}"
                )

    def _location_ranges(self, sizes: Sequence[tuple[int, int]], like: Tensor) -> Tensor:
        """Scale range ``[N, 2]`` (low, high) of every location's level."""
        ranges = [
            like.new_tensor([low, high]).expand(h * w, 2)
            for (h, w), (low, high) in zip(sizes, self.level_ranges, strict=True)
        ]
        return torch.cat(ranges)

    def _assign(self, gt: Tensor, points: Tensor, strides: Tensor, ranges: Tensor) -> Tensor:
        """Index ``[N]`` of the box each location regresses (-1 = background) for ``gt [G, 5]``."""
        num_boxes = gt.shape[0]
        matched = torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)
        if num_boxes == 0:
            return matched
        ex, ey = _box_frame(gt[:, 4])  # [G, 2]
        offset = points[:, None, :] - gt[None, :, :2]  # [N, G, 2]
        u = (offset * ex[None]).sum(-1).abs()  # [N, G] distance from centre along box x
        v = (offset * ey[None]).sum(-1).abs()
        half_w, half_h = gt[None, :, 2] / 2, gt[None, :, 3] / 2
        inside = (u < half_w) & (v < half_h)
        max_distance = torch.maximum(half_w + u, half_h + v)  # max(l, t, r, b)
        in_range = (max_distance >= ranges[:, :1]) & (max_distance < ranges[:, 1:])
        radius = self.center_sampling_radius * strides[:, None]
        near_centre = (u < radius) & (v < radius)
        candidate = inside & in_range & near_centre
        area = (gt[:, 2] * gt[:, 3])[None].expand_as(u)
        cost = torch.where(candidate, area, torch.full_like(area, math.inf))
        best_cost, best = cost.min(dim=1)
        matched = torch.where(torch.isfinite(best_cost), best, matched)

        box_ids = torch.arange(num_boxes, device=points.device)
        has_location = (matched[:, None] == box_ids[None]).any(dim=0)  # [G]
        distance = torch.where(inside, u * u + v * v, torch.full_like(u, math.inf))
        nearest_distance, nearest = distance.min(dim=0)  # [G]
        rescue = ~has_location & torch.isfinite(nearest_distance) & (matched[nearest] < 0)
        matched[nearest[rescue]] = box_ids[rescue]
        return matched

    @staticmethod
    def regression_targets(points: Tensor, gt: Tensor, angle: Tensor | None) -> Tensor:
        """(l, t, r, b) ``[P, 4]`` in pixels from ``points [P, 2]`` to the sides of ``gt [P, 5]``.

        ``angle`` is the predicted ``(sin 2a, cos 2a)`` ``[P, 2]`` (None for horizontal heads).
        Distances are measured in the frame (gt angle or gt angle + pi) nearest the predicted
        angle, so `decode` with the predicted angle reproduces ``gt`` exactly.
        """
        if angle is None:
            frame = torch.zeros_like(gt[:, 4])
        else:
            predicted = 0.5 * torch.atan2(angle[:, 0], angle[:, 1]).detach()
            frame = gt[:, 4] + math.pi * torch.round((predicted - gt[:, 4]) / math.pi)
        ex, ey = _box_frame(frame)
        offset = points - gt[:, :2]
        u = (offset * ex).sum(-1)
        v = (offset * ey).sum(-1)
        half_w, half_h = gt[:, 2] / 2, gt[:, 3] / 2
        return torch.stack((half_w + u, half_h + v, half_w - u, half_h - v), dim=-1)

    def compute_loss(
        self,
        out: dict[str, Tensor],
        targets: Sequence[dict[str, Tensor]],
        image_size: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Named detection losses, each a scalar normalised by ``max(1, num_positive)``.

        targets: one dict per image with ``boxes`` float ``[n, 5]`` (cx, cy, w, h, angle) in input
        pixels and ``labels`` int64 ``[n]``; an optional bool ``labelled`` False marks an image
        whose objects were never annotated (fusion-only data): it adds nothing to any term, since
        its unlabelled objects are not background. Returns ``classification``,
        ``bbox_regression``, ``bbox_ctrness`` and, for rotated heads, ``bbox_angle``.
        """
        cls_logits = out["cls_logits"]
        batch = cls_logits.shape[0]
        self._check_targets(targets, batch)
        sizes = self.level_sizes(image_size)
        points, strides = self.locations(sizes, cls_logits.device, cls_logits.dtype)
        if points.shape[0] != cls_logits.shape[1]:
            raise ValueError(
                f"image_size {tuple(image_size)} gives {points.shape[0]} locations but the "
                f"outputs have {cls_logits.shape[1]}"
            )
        ranges = self._location_ranges(sizes, points)

        cls_target = torch.zeros_like(cls_logits)
        image_ids, location_ids, gt_boxes = [], [], []
        for b, target in enumerate(targets):
            gt = target["boxes"].to(device=points.device, dtype=points.dtype)
            labels = target["labels"].to(points.device)
            matched = self._assign(gt, points, strides, ranges)
            positive = (matched >= 0).nonzero().squeeze(1)  # [P_b]
            cls_target[b, positive, labels[matched[positive]]] = 1.0
            image_ids.append(torch.full_like(positive, b))
            location_ids.append(positive)
            gt_boxes.append(gt[matched[positive]])
        image_ids, location_ids = torch.cat(image_ids), torch.cat(location_ids)
        gt_boxes = torch.cat(gt_boxes)  # [P, 5]
        normaliser = torch.clamp(location_ids.new_tensor(location_ids.numel()), min=1).to(
            cls_logits.dtype
        )

        labelled = torch.tensor(
            [bool(t.get("labelled", True)) for t in targets], device=cls_logits.device
        )
        focal = sigmoid_focal_loss(
            cls_logits, cls_target, alpha=self.focal_alpha, gamma=self.focal_gamma
        )  # [B, N, C]
        losses = {"classification": focal[labelled].sum() / normaliser}
        pred_reg = out["bbox_reg"][image_ids, location_ids]  # [P, 4] stride units
        pos_points, pos_strides = points[location_ids], strides[location_ids]
        pred_angle = out["angle"][image_ids, location_ids] if self.rotated else None  # [P, 2]
        target_ltrb = self.regression_targets(pos_points, gt_boxes, pred_angle)  # [P, 4] pixels

        if self.box_loss == "giou":
            scale = pos_strides[:, None]
            pred_xyxy = torch.cat((-pred_reg[:, :2], pred_reg[:, 2:]), dim=1) * scale
            target_xyxy = torch.cat((-target_ltrb[:, :2], target_ltrb[:, 2:]), dim=1)
            box = generalized_box_iou_loss(pred_xyxy, target_xyxy, reduction="sum")
        else:
            box = F.smooth_l1_loss(
                pred_reg,
                target_ltrb / pos_strides[:, None],
                beta=self.smooth_l1_beta,
                reduction="sum",
            )
        losses["bbox_regression"] = box / normaliser
        losses["bbox_ctrness"] = (
            F.binary_cross_entropy_with_logits(
                out["ctrness"][image_ids, location_ids],
                _centreness(target_ltrb),
                reduction="sum",
            )
            / normaliser
        )
        if self.rotated:
            target_angle = torch.stack(
                (torch.sin(2 * gt_boxes[:, 4]), torch.cos(2 * gt_boxes[:, 4])), dim=1
            )
            losses["bbox_angle"] = (
                F.smooth_l1_loss(
                    pred_angle, target_angle, beta=self.smooth_l1_beta, reduction="sum"
                )
                / normaliser
            )
        return losses

    # ------------------------------------------------------------------ inference

    def _level_top_k(self, flat: Tensor, keep: Tensor, counts: list[int]) -> Tensor:
        """Of the above-threshold indices ``keep`` into ``flat``, at most ``pre_nms_top_k``
        per level, the best ones, level after level."""
        kept, start = [], 0
        for count in counts:
            end = start + count * self.num_classes
            level = keep[(keep >= start) & (keep < end)]
            if level.numel() > self.pre_nms_top_k:
                level = level[flat[level].topk(self.pre_nms_top_k).indices]
            kept.append(level)
            start = end
        return torch.cat(kept)

    def postprocess(
        self,
        out: dict[str, Tensor],
        image_size: tuple[int, int],
        score_threshold: float = 0.25,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        calibration: ScoreCalibration | None = None,
    ) -> list[Detections]:
        """Per image ``{"boxes": [n, 5], "scores": [n], "labels": [n] int64}`` in input pixels.

        Score = sqrt(sigmoid(class logit) * sigmoid(centre-ness)), mapped by ``calibration``
        when given (monotone: ranking and NMS are the raw score's); locations above
        ``score_threshold`` (top ``pre_nms_top_k`` per level) go through class-aware NMS (exact
        rotated IoU for rotated heads); horizontal boxes are clipped to the image first. Boxes are
        sorted by decreasing score; angles are in [-pi/2, pi/2). ``classes``: keep only these class
        indices (before NMS, so a dropped class never suppresses a kept one); ``agnostic``: NMS
        across classes (one box per object whatever its class).
        """
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 <= nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
        if max_detections < 0:
            raise ValueError(f"max_detections must be >= 0, got {max_detections}")
        height, width = image_size
        scores = torch.sqrt(
            torch.sigmoid(out["cls_logits"]) * torch.sigmoid(out["ctrness"])[..., None]
        )  # [B, N, C]
        if calibration is not None:
            scores = calibration.apply(scores)
        counts = [h * w for h, w in self.level_sizes(image_size)]
        results = []
        for b in range(scores.shape[0]):
            flat = scores[b].flatten()  # [N * C], level after level
            keep = (flat > score_threshold).nonzero().squeeze(1)
            if keep.numel() > self.pre_nms_top_k:  # a level may hold more than its top k
                keep = self._level_top_k(flat, keep, counts)
            boxes = out["boxes"][b, keep // self.num_classes]
            box_scores, labels = flat[keep], keep % self.num_classes
            if not self.rotated:
                xyxy = cxcywh_to_xyxy(boxes[:, :4])
                xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
                xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
                boxes = torch.cat((xyxy_to_cxcywh(xyxy), boxes[:, 4:]), dim=1)
            valid = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
            if classes is not None:
                valid &= torch.isin(labels, torch.as_tensor(classes, device=labels.device))
            boxes, box_scores, labels = boxes[valid], box_scores[valid], labels[valid]
            groups = torch.zeros_like(labels) if agnostic else labels
            kept = nms(boxes, box_scores, groups, nms_threshold, rotated=self.rotated)
            kept = kept[:max_detections]
            boxes = boxes[kept]
            boxes[:, 4] = normalize_angle(boxes[:, 4])
            results.append({"boxes": boxes, "scores": box_scores[kept], "labels": labels[kept]})
        return results
