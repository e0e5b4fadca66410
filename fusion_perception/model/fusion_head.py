"""Fusion head: fused luminance ``[B, 1, H, W]`` in [0, 1] from the FRA-enhanced levels.

UniFusOD upsamples every level to the input size, sums them and reduces channels with a 1x1 conv.
A 1x1 conv and bilinear upsampling are both linear, so applying the (shared) 1x1 projection to
each level first and adding its bias once gives the same result at a fraction of the memory.
Five 3x3 convs (ReLU between them) then reconstruct the image; the last one is bounded by a sigmoid
or a clamp. Optionally (``image_skip``) the input luminance and thermal are concatenated to the
first 3x3 conv's input, so detail finer than the feature strides is available to the reconstruction.
With ``output="weights"`` the same convs predict the thermal share of `pyramid_fusion.fuse_pyramid`
instead of the image itself (sigmoid-bounded; the last bias starts at 0, an even blend).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusionHead"]

_NUM_CONVS = 5


class FusionHead(nn.Module):
    """Levels ``[B, C, h_l, w_l]`` (+ luminance, thermal ``[B, 1, H, W]``) -> ``[B, 1, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        image_skip: bool = True,
        output_bound: str = "sigmoid",
        output: str = "image",
    ) -> None:
        super().__init__()
        if output_bound not in ("sigmoid", "clamp"):
            raise ValueError(f"output_bound must be 'sigmoid' or 'clamp', got {output_bound!r}")
        if output not in ("image", "weights"):
            raise ValueError(f"output must be 'image' or 'weights', got {output!r}")
        # a weight map is always a sigmoid: clamping would stop the gradient at saturated pixels
        self.output_bound = "sigmoid" if output == "weights" else output_bound
        self.project = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.image_skip = image_skip
        layers: list[nn.Module] = []
        for i in range(_NUM_CONVS - 1):
            in_width = channels + 2 if i == 0 and image_skip else channels
            layers += [nn.Conv2d(in_width, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        if output == "weights":
            nn.init.zeros_(layers[-1].bias)
        self.reconstruct = nn.Sequential(*layers)

    def _upsample(self, level: Tensor, size: torch.Size) -> Tensor:
        return F.interpolate(self.project(level), size=size, mode="bilinear", align_corners=False)

    def forward(self, levels: Sequence[Tensor], luminance: Tensor, thermal: Tensor) -> Tensor:
        size = luminance.shape[-2:]
        reduced = self._upsample(levels[0], size)
        for level in levels[1:]:
            reduced += self._upsample(level, size)  # in place: full-resolution maps are costly
        reduced += self.bias[None, :, None, None]  # [B, C, H, W]
        if self.image_skip:
            reduced = torch.cat((reduced, luminance, thermal), dim=1)  # [B, C + 2, H, W]
        out = self.reconstruct(reduced)  # [B, 1, H, W]
        if self.output_bound == "sigmoid":
            return torch.sigmoid(out)
        return out.clamp(0.0, 1.0)
