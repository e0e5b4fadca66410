"""Fine-Grained Region Attention (FRA), UniFusOD §3 as rebuilt in seeds_digest.md §1.2c.

For one level ``z`` of shape ``[B, C, H, W]``:

1. K region operators ``A^k = ReLU(BN(conv_k(z)))``, each ``[B, M, H, W]`` (own kernel/dilation).
2. Global context ``s = mean_{H,W} z`` ``[B, C]``; an FFN maps it to ``[B, K, M]`` weights with a
   softmax over M for every operator.
3. ``A = sum_k a_k * A^k`` ``[B, M, H, W]`` and masks ``sigmoid(A)`` in (0, 1).
4. Re-weighting: ``literal`` multiplies z by the summed masks (divided by M when
   ``normalize_gain``); ``channel_group`` scales channel group m of z by mask m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .backbone import ConvBNAct

__all__ = ["FineGrainedRegionAttention"]


class FineGrainedRegionAttention(nn.Module):
    """FRA on one feature level; output has the input's shape ``[B, C, H, W]``."""

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        dilations: Sequence[int] = (1, 1, 1),
        num_regions: int = 8,
        reduction: int = 4,
        variant: str = "literal",
        normalize_gain: bool = True,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ValueError(
                f"dilations {tuple(dilations)} must have one entry per kernel size "
                f"{tuple(kernel_sizes)}"
            )
        if variant not in ("literal", "channel_group"):
            raise ValueError(f"variant must be 'literal' or 'channel_group', got {variant!r}")
        if variant == "channel_group" and channels % num_regions != 0:
            raise ValueError(
                f"channels ({channels}) must be divisible by num_regions ({num_regions}) "
                "for the channel_group variant"
            )
        self.num_operators = len(kernel_sizes)
        self.num_regions = num_regions
        self.variant = variant
        self.normalize_gain = normalize_gain
        self.operators = nn.ModuleList(
            ConvBNAct(channels, num_regions, kernel_size=k, dilation=d)
            for k, d in zip(kernel_sizes, dilations, strict=True)
        )
        hidden = max(8, channels // reduction)
        self.context = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, self.num_operators * num_regions),
        )

    def attention(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Operator weights ``[B, K, M]`` (softmax over M) and region masks ``[B, M, H, W]``."""
        region_maps = torch.stack([op(z) for op in self.operators], dim=1)  # [B, K, M, H, W]
        context = z.mean(dim=(2, 3))  # [B, C]
        logits = self.context(context).unflatten(1, (self.num_operators, self.num_regions))
        weights = logits.softmax(dim=2)  # [B, K, M]
        aggregated = (weights[..., None, None] * region_maps).sum(dim=1)  # [B, M, H, W]
        return weights, torch.sigmoid(aggregated)

    def forward(self, z: Tensor) -> Tensor:
        _, masks = self.attention(z)
        if self.variant == "literal":
            gain = masks.mean(dim=1, keepdim=True) if self.normalize_gain else masks.sum(1, True)
            return z * gain  # [B, C, H, W]
        groups = z.unflatten(1, (self.num_regions, -1))  # [B, M, C/M, H, W]
        return (groups * masks[:, :, None]).flatten(1, 2)
