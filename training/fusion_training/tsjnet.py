"""TSJNet's semantic guidance (seeds_digest.md §2), as a training option: a segmentation network
reads the fused image and its per-pixel cross-entropy flows back into the fusion path, so the
fused image keeps what tells objects from background.

TSJNet uses a pre-trained DeepLabV3+ as a frozen loss provider; no segmentation labels of real
infrared pairs exist here, so the segmenter (`SemanticHead`, a small dilated CNN on the fused
luminance) learns alongside, on the class maps the synthetic generator draws (``semantic``: 0
background, k + 1 class k). Like TarDAL's critics it has its own optimizer and step: the loss
first trains it on the detached fused image, then computes the guidance term with its parameters
frozen, so the fusion network's backward pass never updates it. Items without a class map (the
real pairs) add nothing to either. TSJNet's spatial attention and its diversity loss are not
carried over: our fusion head has no multi-head spatial attention to apply it to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_training.auxiliary import AuxiliaryLoss

__all__ = ["SemanticGuidanceLoss", "SemanticHead", "TSJNetConfig", "semantic_targets"]


@dataclass(frozen=True)
class TSJNetConfig:
    """The ``tsjnet`` section of a training config (off by default).

    weight: of the guidance cross-entropy in the fusion loss; head_lr: Adam learning rate of the
    segmenter; head_width: its channels.
    """

    enabled: bool = False
    weight: float = 1.0
    head_lr: float = 1e-3
    head_width: int = 16

    def __post_init__(self) -> None:
        for name in ("weight", "head_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.head_width < 1:
            raise ValueError(f"head_width must be >= 1, got {self.head_width!r}")


class SemanticHead(nn.Module):
    """Fused luminance ``[B, 1, H, W]`` -> class logits ``[B, C, H, W]`` (C = classes + 1):
    four 3x3 convolutions with dilations 1, 2, 4, 1 (a 17 px receptive field) and a 1x1."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for dilation in (1, 2, 4, 1):
            layers += [
                nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers.append(nn.Conv2d(width, num_classes + 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, fused: Tensor) -> Tensor:
        return self.net(fused)


def semantic_targets(targets: Sequence[Mapping[str, Tensor]]) -> tuple[list[int], Tensor | None]:
    """Indices of the batch items that carry a class map, and those maps ``[K, H, W]``."""
    index = [i for i, t in enumerate(targets) if "semantic" in t]
    if not index:
        return [], None
    return index, torch.stack([targets[i]["semantic"] for i in index])


class SemanticGuidanceLoss(AuxiliaryLoss):
    """A criterion plus TSJNet's guidance term in the fusion task; owns the segmenter and its
    optimizer. Composes with `fusion_training.tardal.TargetAwareLoss` (either may wrap the
    other)."""

    def __init__(
        self, base: Any, config: TSJNetConfig, num_classes: int, device: torch.device
    ) -> None:
        super().__init__(base)
        self.config = config
        self.head = SemanticHead(num_classes, config.head_width).to(device)
        self.networks = {"head": self.head}
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=config.head_lr)

    def head_step(self, fused: Tensor, maps: Tensor) -> Tensor:
        """One optimizer step of the segmenter on the detached fused images; its loss."""
        self.head.train()
        with torch.enable_grad():
            return self.step_apart(F.cross_entropy(self.head(fused.detach()), maps))

    def term(self, fused, rgb, thermal, targets, terms, train) -> Tensor:
        index, maps = semantic_targets(targets)
        zero = fused.new_zeros(())
        terms.update(tsjnet_guidance=zero, tsjnet_head=zero)
        if maps is None:  # no class map in this batch (real pairs only): nothing to guide
            return zero
        fused, maps = fused[index], maps.to(fused.device)
        if train:
            terms["tsjnet_head"] = self.head_step(fused, maps)
        self.head.eval()  # the guidance reads the segmenter as it is (BN statistics kept)
        with self.frozen():
            guidance = F.cross_entropy(self.head(fused), maps)
        terms["tsjnet_guidance"] = guidance
        return self.config.weight * guidance
