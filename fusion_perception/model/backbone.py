"""Shared backbones: the package's own small network, EfficientNet-Lite0, or a torchvision
ResNet / MobileNetV3.

Every backbone maps a normalised image batch ``[B, 3, H, W]`` to feature maps at the requested
strides (a subset of 4, 8, 16, 32, ``SUPPORTED_STRIDES``), with ``out_channels`` giving their widths.
Stages deeper than the largest requested stride are not built, so every parameter is trained.
torchvision architectures are built with ``weights=None``; pretrained weights come only from a
state-dict file the user supplies (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from .config import SUPPORTED_STRIDES, BackboneConfig
from .efficientnet_lite import EfficientNetLite0, load_imagenet_weights

__all__ = ["OwnBackbone", "StagedBackbone", "build_backbone"]


def _round_width(channels: float, multiplier: float) -> int:
    """Scale a width and round to a multiple of 8 (at least 8), like MobileNet's width rule."""
    return max(8, int(channels * multiplier + 4) // 8 * 8)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> optional ReLU; 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise (stride 1 or 2), 1x1 project.

    The identity shortcut is used when the block keeps resolution and width.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: float) -> None:
        super().__init__()
        hidden = _round_width(in_channels * expansion, 1.0)
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            ConvBNAct(in_channels, hidden, kernel_size=1),
            ConvBNAct(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            ConvBNAct(hidden, out_channels, kernel_size=1, activation=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_shortcut else y


class OwnBackbone(nn.Module):
    """Small from-scratch backbone: 3x3 stem (stride 2) and four inverted-residual stages.

    Stage i starts with a stride-2 block and adds ``depths[i]`` residual blocks; outputs are
    taken after the stages whose stride (4, 8, 16, 32) is in ``strides``.
    """

    def __init__(self, cfg: BackboneConfig, strides: Sequence[int] = SUPPORTED_STRIDES) -> None:
        super().__init__()
        widths = [_round_width(c, cfg.width_multiplier) for c in cfg.channels]
        self.stem = ConvBNAct(3, widths[0], kernel_size=3, stride=2)
        num_stages = SUPPORTED_STRIDES.index(max(strides)) + 1
        self.taps = tuple(SUPPORTED_STRIDES.index(s) for s in strides)
        stages = []
        for i, depth in enumerate(cfg.depths[:num_stages]):
            blocks = [InvertedResidual(widths[i], widths[i + 1], 2, cfg.expansion)]
            blocks += [
                InvertedResidual(widths[i + 1], widths[i + 1], 1, cfg.expansion)
                for _ in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(widths[i + 1] for i in self.taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> one feature map per requested stride, in order."""
        x = self.stem(x)
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.taps:
                features.append(x)
        return features


class StagedBackbone(nn.Module):
    """A torchvision network cut into a block sequence; taps the last block at each stride.

    The strides and widths of the blocks are measured once with a probe input, so any
    architecture whose blocks form a chain works without per-model tables.
    """

    def __init__(
        self, blocks: list[nn.Module], name: str, strides: Sequence[int] = SUPPORTED_STRIDES
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        probe_size = 64
        x = torch.zeros(1, 3, probe_size, probe_size)
        last_at_stride: dict[int, tuple[int, int]] = {}
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for index, block in enumerate(self.blocks):
                x = block(x)
                last_at_stride[probe_size // x.shape[-1]] = (index, x.shape[1])
        self.train(was_training)
        missing = [s for s in strides if s not in last_at_stride]
        if missing:
            raise ValueError(f"backbone {name!r} has no feature map at strides {missing}")
        self.taps: tuple[int, ...] = tuple(last_at_stride[s][0] for s in strides)
        self.out_channels: tuple[int, ...] = tuple(last_at_stride[s][1] for s in strides)
        # Blocks after the deepest tap (deeper stages, classifier layers) are never used.
        self.blocks = self.blocks[: max(self.taps) + 1]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> one feature map per requested stride, in order."""
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                features.append(x)
        return features


def _load_weights(network: nn.Module, path: str, name: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"backbone.weights file not found: {path}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(
            f"backbone.weights {path} must hold a state dict, got {type(state).__name__}"
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"backbone.weights {path} does not fit backbone {name!r}: {error}"
        ) from None


def _efficientnet_lite_blocks(cfg: BackboneConfig) -> list[nn.Module]:
    net = EfficientNetLite0()
    if cfg.weights:
        if not cfg.weights == "imagenet" and not Path(cfg.weights).is_file():
            raise FileNotFoundError(f"backbone.weights file not found: {cfg.weights}")
        load_imagenet_weights(net, None if cfg.weights == "imagenet" else cfg.weights)
    return net.blocks()


def _torchvision_blocks(cfg: BackboneConfig) -> list[nn.Module]:
    if cfg.name.startswith("resnet"):
        net = getattr(torchvision.models, cfg.name)(weights=None)
        if cfg.weights:
            _load_weights(net, cfg.weights, cfg.name)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    net = getattr(torchvision.models, cfg.name)(weights=None, width_mult=cfg.width_multiplier)
    if cfg.weights:
        _load_weights(net, cfg.weights, cfg.name)
    return list(net.features)


def build_backbone(cfg: BackboneConfig, strides: Sequence[int] = SUPPORTED_STRIDES) -> nn.Module:
    """Backbone for ``cfg.name`` returning features (and ``out_channels``) at ``strides``.

    A weights file is loaded into the complete architecture before unused stages are dropped, so
    the file is always the standard full state dict.
    """
    bad = [s for s in strides if s not in SUPPORTED_STRIDES]
    if bad or not strides or list(strides) != sorted(set(strides)):
        raise ValueError(
            f"strides must be increasing values from {SUPPORTED_STRIDES}, got {tuple(strides)}"
        )
    if cfg.name == "own":
        if cfg.weights:
            full = OwnBackbone(cfg)
            _load_weights(full, cfg.weights, cfg.name)
            backbone = OwnBackbone(cfg, strides)
            backbone.load_state_dict(full.state_dict(), strict=False)
            return backbone
        return OwnBackbone(cfg, strides)
    if cfg.name == "efficientnet_lite0":
        return StagedBackbone(_efficientnet_lite_blocks(cfg), cfg.name, strides)
    return StagedBackbone(_torchvision_blocks(cfg), cfg.name, strides)
