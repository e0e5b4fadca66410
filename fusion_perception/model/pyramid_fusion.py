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

_MIN_TOP = 4  # the coarsest level keeps at least this many pixels on its short side


def _binomial(x: Tensor, dim: int, size: int, step: int) -> Tensor:
    """The 5-tap binomial filter along ``dim`` of a tensor padded by 2 on that side, at every
    ``step``-th of the ``size`` output positions. Shifted slices and adds, not a convolution:
    a one-channel 5x5 convolution is the slowest op of the blend on a CPU, and slices export
    to ONNX as they are."""

    def tap(i: int) -> Tensor:
        index = [slice(None)] * x.dim()
        index[dim] = slice(i, i + size, step)
        return x[tuple(index)]

    return (tap(0) + tap(4) + 4.0 * (tap(1) + tap(3)) + 6.0 * tap(2)) * (1.0 / 16.0)


def _down(x: Tensor) -> Tensor:
    """5x5 binomial blur (separable, replicated borders) keeping every other row and column;
    only the kept rows and columns are filtered."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    rows = _binomial(padded, -2, height, 2)
    return _binomial(rows, -1, width, 2)


def _box_sum(x: Tensor) -> Tensor:
    """Sum over each 3x3 neighbourhood (zeros outside the image)."""
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :-2, :] + padded[..., 1:-1, :] + padded[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


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
        # more local energy (3x3 mean of the squared coefficient) in thermal than in visible:
        # both means share the neighbourhood's pixel count, so compare the sums' difference
        squared = detail * detail
        pick_thermal = _box_sum(squared[:, 1:] - squared[:, :1]) > 0
        chosen = torch.where(pick_thermal, detail[:, 1:], detail[:, :1])
        fused = _up(fused, detail.shape[-2:]) + chosen
    return fused.clamp(0.0, 1.0)
