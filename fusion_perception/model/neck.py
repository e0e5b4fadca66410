"""Equal-width neck: per-level sum of the RGB and thermal features, then projection.

``z_l = f_l(rgb) + f_l(thermal)`` (element-wise; the only cross-modal interaction, as in UniFusOD),
projected by a 1x1 conv to ``channels``; with ``top_down`` an FPN path adds each coarser level
(nearest upsampling) before a 3x3 conv. All outputs have the same width so FRA and the fusion
head can treat levels alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ConvBNAct

__all__ = ["ModalitySumNeck"]


class ModalitySumNeck(nn.Module):
    """Sum modalities per level and map every level to ``channels`` (strides increasing)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        strides: Sequence[int],
        top_down: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(
                f"in_channels {tuple(in_channels)} and strides {tuple(strides)} differ in length"
            )
        self.strides = tuple(strides)
        self.top_down = top_down
        self.lateral = nn.ModuleList(
            ConvBNAct(c, channels, kernel_size=1, activation=not top_down) for c in in_channels
        )
        self.output = nn.ModuleList(
            ConvBNAct(channels, channels, kernel_size=3) if top_down else nn.Identity()
            for _ in in_channels
        )

    def forward(self, rgb: Sequence[Tensor], thermal: Sequence[Tensor]) -> list[Tensor]:
        """Per-level ``[B, C_l, h_l, w_l]`` features of each modality -> ``[B, channels, h_l, w_l]``."""
        laterals = [proj(a + b) for proj, a, b in zip(self.lateral, rgb, thermal, strict=True)]
        if self.top_down:
            for i in range(len(laterals) - 2, -1, -1):
                factor = self.strides[i + 1] // self.strides[i]
                laterals[i] = laterals[i] + F.interpolate(
                    laterals[i + 1], scale_factor=float(factor), mode="nearest"
                )
        return [out(x) for out, x in zip(self.output, laterals, strict=True)]
