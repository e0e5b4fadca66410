"""Native-resolution fusion: a Laplacian-pyramid blend of the two sources steered by a weight map.

The network predicts a per-pixel weight ``w`` in [0, 1] (thermal share) at its input size. The fused
image is then built from the full-resolution sources, so it keeps their own fine detail whatever the
detector's input size:

* every Laplacian (detail) level takes, per pixel, the coefficient of the source with more local
  energy (3x3 mean of the squared coefficient): edges of both cameras survive at full strength;
* the coarsest (Gaussian) level, where brightness and large structures live, is blended by ``w``:
  this is where the network decides that a warm person should glow in the fused image.

All operations are differentiable tensor code, so training backpropagates through the same blend it
runs at inference (at the training input size), and the blend is exported-model friendly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fuse_pyramid", "levels_for_size", "pyramid_levels"]

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)
_MIN_TOP = 4  # the coarsest level keeps at least this many pixels on its short side


def _blur(x: Tensor) -> Tensor:
    """5x5 binomial blur per channel; channels fold into the batch so the kernel has one fixed
    shape (ONNX needs a constant-shaped kernel)."""
    row = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device) / sum(_BINOMIAL)
    kernel = (row[:, None] * row[None, :]).view(1, 1, 5, 5)
    batch, channels, height, width = x.shape
    flat = F.pad(x.reshape(batch * channels, 1, height, width), (2, 2, 2, 2), mode="replicate")
    return F.conv2d(flat, kernel).view(batch, channels, height, width)


def _down(x: Tensor) -> Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pyramid_levels(height: int, width: int, requested: int) -> int:
    """Detail levels usable for an image of this size (the coarsest level stays >= 4 px)."""
    fit = math.floor(math.log2(max(1, min(height, width)) / _MIN_TOP))
    return max(0, min(requested, fit))


def levels_for_size(levels: int, size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """Levels at ``size`` (H, W) that put the coarsest level at the same relative scale as
    ``levels`` do at the network's ``input_size`` (H, W): one more level per doubling."""
    ratio = min(size) / max(1, min(input_size))
    return max(0, levels + round(math.log2(ratio))) if ratio > 0 else levels


def fuse_pyramid(weight: Tensor, visible: Tensor, thermal: Tensor, levels: int) -> Tensor:
    """Fused luminance ``[B, 1, H, W]`` in [0, 1].

    weight: thermal share ``[B, 1, h, w]`` in [0, 1] (resized to H x W if needed); visible,
    thermal: ``[B, 1, H, W]`` in [0, 1]; levels: detail levels (capped by `pyramid_levels`).
    """
    size = visible.shape[-2:]
    if weight.shape[-2:] != size:
        weight = _up(weight, size)
    levels = pyramid_levels(int(size[0]), int(size[1]), levels)
    current = torch.cat((visible, thermal), dim=1)  # [B, 2, H, W]
    details = []
    for _ in range(levels):
        coarser = _down(current)
        details.append(current - _up(coarser, current.shape[-2:]))
        current = coarser
        weight = _down(weight)
    fused = weight * current[:, 1:] + (1.0 - weight) * current[:, :1]
    for detail in reversed(details):
        energy = F.avg_pool2d(detail * detail, 3, stride=1, padding=1, count_include_pad=False)
        pick_thermal = energy[:, 1:] > energy[:, :1]
        chosen = torch.where(pick_thermal, detail[:, 1:], detail[:, :1])
        fused = _up(fused, detail.shape[-2:]) + chosen
    return fused.clamp(0.0, 1.0)
