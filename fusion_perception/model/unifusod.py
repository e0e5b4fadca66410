"""UniFusOD: one network that fuses RGB + thermal and detects objects in the same forward pass.

Data flow (seeds_digest.md §1.2)::

    rgb [B,3,H,W], thermal [B,1,H,W] (both in [0, 1])
      -> normalise; thermal replicated to 3 channels; both run through the SAME backbone in one
         batch of 2B (BatchNorm then sees the joint distribution in training and in eval)
      -> neck: per level rgb + thermal (element-wise), equal-width projection (+ top-down)
      -> FRA per level (identity when disabled)
      -> fusion head -> "fused" [B,1,H,W] in [0,1];  detection head -> dense outputs
         (fusion_head.output "weights": the head gives "fusion_weight", the thermal share of a
         Laplacian-pyramid blend of the sources, and "fused" is that blend at the input size;
         FusionEngine applies the same weight map to the full-resolution sources)

The forward pass is plain tensor code (no data-dependent Python branches), so it can be traced and
exported to ONNX; losses and post-processing are separate methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..score_calibration import ScoreCalibration
from .backbone import build_backbone
from .config import ModelConfig
from .detection_head import DetectionHead, Detections
from .fra import FineGrainedRegionAttention
from .fusion_head import FusionHead
from .neck import ModalitySumNeck
from .pyramid_fusion import fuse_pyramid

__all__ = ["LUMA", "TASKS", "UniFusOD", "build_model"]

TASKS = ("fusion", "detection")
# ITU-R BT.601 luma weights; the fused output is a luminance image in the same convention.
LUMA = (0.299, 0.587, 0.114)


class UniFusOD(nn.Module):
    """Shared backbone + neck + FRA with a fusion head and a detection head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        strides = cfg.detection_head.strides
        self.max_stride = max(strides)
        self.backbone = build_backbone(cfg.backbone, strides)
        self.neck = ModalitySumNeck(
            self.backbone.out_channels,
            cfg.neck.channels,
            strides,
            top_down=cfg.neck.top_down,
        )
        fra = cfg.fra
        self.fra = nn.ModuleList(
            FineGrainedRegionAttention(
                cfg.neck.channels,
                kernel_sizes=fra.kernel_sizes,
                dilations=fra.dilations,
                num_regions=fra.num_regions,
                reduction=fra.reduction,
                variant=fra.variant,
                normalize_gain=fra.normalize_gain,
            )
            if fra.enabled
            else nn.Identity()
            for _ in strides
        )
        self.fusion_head = FusionHead(
            cfg.neck.channels,
            cfg.fusion_head.channels,
            image_skip=cfg.fusion_head.image_skip,
            output_bound=cfg.fusion_head.output_bound,
            output=cfg.fusion_head.output,
        )
        self.fusion_output = cfg.fusion_head.output
        self.pyramid_levels = cfg.fusion_head.pyramid_levels
        self.detection_head = DetectionHead(cfg.detection_head, cfg.neck.channels)
        mean = torch.tensor(cfg.backbone.input_mean).view(1, 3, 1, 1)
        std = torch.tensor(cfg.backbone.input_std).view(1, 3, 1, 1)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def _check_inputs(self, rgb: Tensor, thermal: Tensor) -> None:
        for name, x, channels in (("rgb", rgb, 3), ("thermal", thermal, 1)):
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{name} must be a tensor [B, {channels}, H, W], got {shape}")
        if rgb.shape[0] != thermal.shape[0] or rgb.shape[-2:] != thermal.shape[-2:]:
            raise ValueError(
                f"rgb {tuple(rgb.shape)} and thermal {tuple(thermal.shape)} must share B, H and W"
            )
        height, width = rgb.shape[-2:]
        if height % self.max_stride or width % self.max_stride:
            raise ValueError(
                f"input height and width must be multiples of {self.max_stride}, "
                f"got H={height}, W={width}"
            )

    def forward(self, rgb: Tensor, thermal: Tensor) -> dict[str, Tensor]:
        """rgb ``[B,3,H,W]`` and thermal ``[B,1,H,W]`` float in [0, 1] -> dict of tensors.

        Keys: ``fused`` ``[B,1,H,W]`` in [0, 1] (and ``fusion_weight`` ``[B,1,H,W]`` with
        ``fusion_head.output: weights``) plus the detection head's dense outputs
        (``cls_logits``, ``bbox_reg``, ``ctrness``, ``angle`` if rotated, ``boxes``; see
        `DetectionHead`). H and W must be multiples of the largest detection stride.
        """
        if not torch.jit.is_tracing():
            self._check_inputs(rgb, thermal)
        images = torch.cat((rgb, thermal.expand(-1, 3, -1, -1)), dim=0)  # [2B, 3, H, W]
        features = self.backbone(images.sub_(self.input_mean).div_(self.input_std))
        pairs = [f.chunk(2, dim=0) for f in features]  # (rgb, thermal) halves per level
        levels = self.neck([p[0] for p in pairs], [p[1] for p in pairs])
        levels = [fra(level) for fra, level in zip(self.fra, levels, strict=True)]
        luminance = (rgb * self.luma).sum(dim=1, keepdim=True)  # [B, 1, H, W]
        head = self.fusion_head(levels, luminance, thermal)
        if self.fusion_output == "weights":
            fused = fuse_pyramid(head, luminance, thermal, self.pyramid_levels)
            out = {"fused": fused, "fusion_weight": head}
        else:
            out = {"fused": head}
        out.update(self.detection_head(levels))
        return out

    def detection_loss(
        self, out: dict[str, Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Named scalar detection losses; targets: per image ``boxes`` [n,5] px, ``labels`` [n]."""
        image_size = (out["fused"].shape[-2], out["fused"].shape[-1])
        return self.detection_head.compute_loss(out, targets, image_size)

    def postprocess(
        self,
        out: dict[str, Tensor],
        score_threshold: float = 0.25,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        calibration: ScoreCalibration | None = None,
    ) -> list[Detections]:
        """Per image ``{"boxes": [n,5], "scores": [n], "labels": [n]}`` in input pixels (see
        `DetectionHead.postprocess` for ``classes``, ``agnostic`` and ``calibration``)."""
        image_size = (out["fused"].shape[-2], out["fused"].shape[-1])
        with torch.no_grad():
            return self.detection_head.postprocess(
                out,
                image_size,
                score_threshold,
                nms_threshold,
                max_detections,
                classes,
                agnostic,
                calibration,
            )

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters both tasks train through: backbone, neck and FRA."""
        return [p for m in (self.backbone, self.neck, self.fra) for p in m.parameters()]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters owned by one head: ``"fusion"`` or ``"detection"``."""
        if task == "fusion":
            return list(self.fusion_head.parameters())
        if task == "detection":
            return list(self.detection_head.parameters())
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def build_model(cfg: ModelConfig) -> UniFusOD:
    """Build an untrained UniFusOD network (backbone weights only from ``cfg.backbone.weights``)."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    return UniFusOD(cfg)
