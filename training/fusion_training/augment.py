"""Paired augmentation of RGB + thermal detection items: one geometry for both images and the boxes.

:class:`PairedAugment` maps a dataset item (``rgb`` uint8 HxWx3, ``thermal`` float32 HxW in
[0, 1], ``boxes`` float32 [N, 5] (cx, cy, w, h, angle), ``labels`` int64 [N]) to a new item of
``output_size``; an optional ``semantic`` class map (uint8 HxW) follows the geometry; other keys
(``image_id``, ``labelled``) pass through unchanged. In this order:

1. geometry, shared by both images and the boxes: random resized crop, horizontal flip, then
   resize (letterbox by default) to the input size. It is one integer crop, one flip, one resize
   and one pad, so pixels are resampled once and the box mapping is an exact affine map;
2. photometric jitter per modality: RGB brightness/contrast/saturation/hue, thermal
   gain/offset/gamma/noise;
3. cross-modal cutout (IVGF's Cutout&Mix): blank a random rectangle in one modality, so the model
   must recover that region from the other one;
4. cross-modal mix (the Mix half): swap a random subset of grid cells between the two modalities
   of the pair; boxes are unchanged because the objects are still there in the other modality;
5. modality dropout: blank one whole modality (thermal or RGB) for robustness to a lost camera.

Where torchvision.transforms.v2 is used and why not elsewhere: the RGB jitter calls
``v2.functional.adjust_*`` (its colour maths, with factors drawn from this module's seeded numpy
generator). Geometry is our own because (a) oriented boxes are a beta feature of v2 and v2
clips them in its own way, whereas a clipped object here keeps its orientation and is refit
tightly along it (:func:`fusion_training.datasets.geometry.affine_boxes`); (b) v2 has no letterbox
and its RandomResizedCrop neither drops boxes left mostly outside nor reports the content region;
(c) v2 draws randomness from torch's global generator, while this pipeline is reproducible from
one seed per DataLoader worker. Thermal and the cross-modal steps have no v2 equivalent.

Horizontal flip negates oriented angles: (cx, cy, w, h, a) -> (W - cx, cy, w, h, -a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.transforms.v2 import functional as TF

from fusion_training.datasets.geometry import affine_boxes

Item = dict[str, Any]
Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1) in output pixels


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :class:`PairedAugment`; probabilities are per item.

    output_size: (height, width) of the model input. rotated: oriented boxes (else angles must
    be 0 and stay 0). letterbox: keep the aspect ratio and pad (else stretch). crop_scale /
    crop_ratio: area fraction and aspect-ratio range of the random crop (torchvision semantics).
    brightness/contrast/saturation: RGB factors drawn from [1 - v, 1 + v]; hue: shift in
    [-v, v] (<= 0.5). thermal_gain/thermal_offset: t * U(1 +- g) + U(+- o); thermal_gamma: range
    of the exponent; thermal_noise: largest Gaussian sigma. cutout_scale: area fraction range of
    the cut-out rectangle. mix_grid / mix_fraction: grid size and fraction of cells swapped.
    dropout_rgb_share: probability that a dropped modality is RGB. min_visible: fraction of a
    box's area that must stay in the image after cropping; min_size: shortest kept side (px).
    """

    output_size: tuple[int, int]
    rotated: bool = False
    letterbox: bool = True
    rgb_pad: int = 0  # the letterbox fill FusionEngine uses at inference
    thermal_pad: float = 0.0
    crop_probability: float = 0.5
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.02
    thermal_gain: float = 0.15
    thermal_offset: float = 0.05
    thermal_gamma: tuple[float, float] = (0.8, 1.25)
    thermal_noise: float = 0.01
    cutout_probability: float = 0.15
    cutout_scale: tuple[float, float] = (0.02, 0.15)
    mix_probability: float = 0.15
    mix_grid: int = 4
    mix_fraction: float = 0.25
    dropout_probability: float = 0.1
    dropout_rgb_share: float = 0.5
    min_visible: float = 0.35
    min_size: float = 2.0

    def __post_init__(self) -> None:
        size = self.output_size
        if len(size) != 2 or any(int(v) != v or v < 1 for v in size):
            raise ValueError(
                f"output_size must be (height, width) of positive integers, got {size!r}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                f.name.endswith(("probability", "fraction", "share", "min_visible"))
                and not 0.0 <= value <= 1.0
            ):
                raise ValueError(f"{f.name} must be in [0, 1], got {value!r}")
        for name in ("brightness", "contrast", "saturation", "thermal_gain"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue!r}")
        for name in ("thermal_offset", "thermal_noise", "min_size", "thermal_pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name, upper in (
            ("crop_scale", 1.0),
            ("cutout_scale", 1.0),
            ("crop_ratio", math.inf),
            ("thermal_gamma", math.inf),
        ):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= upper:
                raise ValueError(
                    f"{name} must be (low, high) with 0 < low <= high <= {upper}, got {(lo, hi)!r}"
                )
        if int(self.mix_grid) != self.mix_grid or self.mix_grid < 1:
            raise ValueError(f"mix_grid must be a positive integer, got {self.mix_grid!r}")
        if not 0 <= self.rgb_pad <= 255:
            raise ValueError(f"rgb_pad must be in [0, 255], got {self.rgb_pad!r}")

    @classmethod
    def evaluation(
        cls, output_size: tuple[int, int], rotated: bool = False, letterbox: bool = True
    ) -> AugmentConfig:
        """Deterministic resize/letterbox only (validation and test sets)."""
        geometry = cls(
            output_size=output_size,
            rotated=rotated,
            letterbox=letterbox,
            crop_probability=0.0,
            flip_probability=0.0,
        )
        return geometry.without_photometric()

    def without_photometric(self) -> AugmentConfig:
        """The same geometry with every pixel-value change switched off."""
        return replace(
            self,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            hue=0.0,
            thermal_gain=0.0,
            thermal_offset=0.0,
            thermal_gamma=(1.0, 1.0),
            thermal_noise=0.0,
            cutout_probability=0.0,
            mix_probability=0.0,
            dropout_probability=0.0,
        )


@dataclass(frozen=True)
class GeometryPlan:
    """Crop (x0, y0, w, h) of the input, flip, resized size (w, h) and pad offsets (left, top)."""

    crop: tuple[int, int, int, int]
    flip: bool
    resized: tuple[int, int]
    pad: tuple[int, int]

    def matrix(self) -> np.ndarray:
        """2x3 affine from input to output pixel coordinates (pixel i covers [i, i+1))."""
        x0, y0, cw, ch = self.crop
        sx, sy = self.resized[0] / cw, self.resized[1] / ch
        left, top = self.pad
        if self.flip:
            return np.array([[-sx, 0.0, left + sx * (x0 + cw)], [0.0, sy, top - sy * y0]])
        return np.array([[sx, 0.0, left - sx * x0], [0.0, sy, top - sy * y0]])

    def content(self) -> Rect:
        """Region of the output that holds image content (the rest is padding)."""
        left, top = self.pad
        return left, top, left + self.resized[0], top + self.resized[1]


def random_crop(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) with area fraction in ``scale`` and aspect in ``ratio``; whole image if none fits."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            return (
                int(rng.integers(0, width - cw + 1)),
                int(rng.integers(0, height - ch + 1)),
                cw,
                ch,
            )
    return 0, 0, width, height


def plan_geometry(
    width: int, height: int, config: AugmentConfig, rng: np.random.Generator
) -> GeometryPlan:
    """Draw the crop and flip of one item and fit the result into ``config.output_size``."""
    crop = (0, 0, width, height)
    if rng.random() < config.crop_probability:
        crop = random_crop(rng, width, height, config.crop_scale, config.crop_ratio)
    flip = bool(rng.random() < config.flip_probability)
    out_h, out_w = (int(v) for v in config.output_size)
    if not config.letterbox:
        return GeometryPlan(crop, flip, (out_w, out_h), (0, 0))
    scale = min(out_w / crop[2], out_h / crop[3])
    new_w = min(out_w, max(1, round(crop[2] * scale)))
    new_h = min(out_h, max(1, round(crop[3] * scale)))
    return GeometryPlan(crop, flip, (new_w, new_h), ((out_w - new_w) // 2, (out_h - new_h) // 2))


def apply_geometry(item: Item, plan: GeometryPlan, config: AugmentConfig) -> Item:
    """Crop, flip, resize and pad both images; map, clip and refit the boxes (dropping lost ones)."""
    x0, y0, cw, ch = plan.crop
    rgb = item["rgb"][y0 : y0 + ch, x0 : x0 + cw]
    thermal = item["thermal"][y0 : y0 + ch, x0 : x0 + cw]
    if plan.flip:
        rgb, thermal = rgb[:, ::-1], thermal[:, ::-1]
    if plan.resized != (cw, ch):
        shrink = plan.resized[0] < cw or plan.resized[1] < ch
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        rgb = cv2.resize(np.ascontiguousarray(rgb), plan.resized, interpolation=interpolation)
        thermal = cv2.resize(
            np.ascontiguousarray(thermal), plan.resized, interpolation=interpolation
        )
    out_h, out_w = (int(v) for v in config.output_size)
    left, top = plan.pad
    right, bottom = out_w - left - plan.resized[0], out_h - top - plan.resized[1]
    if left or top or right or bottom:
        rgb = cv2.copyMakeBorder(
            np.ascontiguousarray(rgb),
            top,
            bottom,
            left,
            right,
            cv2.BORDER_CONSTANT,
            value=(config.rgb_pad,) * 3,
        )
        thermal = cv2.copyMakeBorder(
            np.ascontiguousarray(thermal),
            top,
            bottom,
            left,
            right,
            cv2.BORDER_CONSTANT,
            value=config.thermal_pad,
        )
    boxes, keep = affine_boxes(
        item["boxes"],
        plan.matrix(),
        plan.content(),
        config.rotated,
        config.min_visible,
        config.min_size,
    )
    extra = {}
    if "semantic" in item:  # class per pixel: the same geometry, nearest neighbour, 0 padding
        semantic = item["semantic"][y0 : y0 + ch, x0 : x0 + cw]
        semantic = semantic[:, ::-1] if plan.flip else semantic
        semantic = cv2.resize(
            np.ascontiguousarray(semantic), plan.resized, interpolation=cv2.INTER_NEAREST
        )
        extra["semantic"] = cv2.copyMakeBorder(
            semantic, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0
        )
    return {
        **item,
        **extra,
        "rgb": np.array(rgb, dtype=np.uint8, order="C"),
        "thermal": np.array(thermal, dtype=np.float32, order="C"),
        "boxes": boxes,
        "labels": np.asarray(item["labels"], dtype=np.int64)[keep],
    }


def jitter_rgb(rgb: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, saturation and hue with torchvision's v2 colour functions."""
    if not (config.brightness or config.contrast or config.saturation or config.hue):
        return rgb
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    if config.brightness:
        image = TF.adjust_brightness(
            image, float(rng.uniform(1 - config.brightness, 1 + config.brightness))
        )
    if config.contrast:
        image = TF.adjust_contrast(
            image, float(rng.uniform(1 - config.contrast, 1 + config.contrast))
        )
    if config.saturation:
        image = TF.adjust_saturation(
            image, float(rng.uniform(1 - config.saturation, 1 + config.saturation))
        )
    if config.hue:
        image = TF.adjust_hue(image, float(rng.uniform(-config.hue, config.hue)))
    return image.permute(1, 2, 0).contiguous().numpy()


def jitter_thermal(
    thermal: np.ndarray, rng: np.random.Generator, config: AugmentConfig
) -> np.ndarray:
    """Gain, offset, gamma and Gaussian noise on normalized thermal; stays in [0, 1]."""
    gain = rng.uniform(1 - config.thermal_gain, 1 + config.thermal_gain)
    offset = rng.uniform(-config.thermal_offset, config.thermal_offset)
    gamma = math.exp(
        rng.uniform(math.log(config.thermal_gamma[0]), math.log(config.thermal_gamma[1]))
    )
    if gain == 1 and offset == 0 and gamma == 1 and not config.thermal_noise:
        return thermal
    out = np.clip(thermal * np.float32(gain) + np.float32(offset), 0.0, 1.0)
    if gamma != 1:
        out **= np.float32(gamma)
    if config.thermal_noise:
        sigma = np.float32(rng.uniform(0.0, config.thermal_noise))
        out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
        np.clip(out, 0.0, 1.0, out=out)
    return out


def cross_modal_cutout(
    item: Item, rng: np.random.Generator, scale: tuple[float, float], region: Rect
) -> str:
    """Zero a random rectangle (area fraction in ``scale`` of ``region``) in one random modality,
    in place; returns which modality ('rgb' or 'thermal')."""
    x0, y0, x1, y1 = region
    area = (x1 - x0) * (y1 - y0) * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    w = int(min(x1 - x0, max(1, round(math.sqrt(area * aspect)))))
    h = int(min(y1 - y0, max(1, round(math.sqrt(area / aspect)))))
    x, y = int(rng.integers(x0, x1 - w + 1)), int(rng.integers(y0, y1 - h + 1))
    modality = "rgb" if rng.random() < 0.5 else "thermal"
    item[modality][y : y + h, x : x + w] = 0
    return modality


def cross_modal_mix(
    item: Item, rng: np.random.Generator, grid: int, fraction: float, region: Rect
) -> int:
    """Swap a random ``fraction`` of the ``grid`` x ``grid`` cells of ``region`` between the
    modalities, in place: RGB cells get thermal (as grey), thermal cells get RGB luma (BT.601).
    Returns the number of swapped cells."""
    x0, y0, x1, y1 = region
    xs = np.linspace(x0, x1, grid + 1).round().astype(int)
    ys = np.linspace(y0, y1, grid + 1).round().astype(int)
    count = max(1, round(fraction * grid * grid))
    luma = cv2.cvtColor(item["rgb"], cv2.COLOR_RGB2GRAY).astype(np.float32) / np.float32(255.0)
    thermal8 = np.clip(item["thermal"] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for cell in rng.choice(grid * grid, size=count, replace=False):
        row, col = divmod(int(cell), grid)
        rows, cols = slice(ys[row], ys[row + 1]), slice(xs[col], xs[col + 1])
        item["rgb"][rows, cols] = thermal8[rows, cols, None]
        item["thermal"][rows, cols] = luma[rows, cols]
    return count


def modality_dropout(
    item: Item, rng: np.random.Generator, probability: float, rgb_share: float
) -> str | None:
    """With ``probability``, blank one whole modality (RGB with ``rgb_share``, else thermal);
    returns the dropped modality or None. A new array replaces the blanked one, so an input that
    the geometry step passed through unchanged is never modified."""
    drop, choice = rng.random(2)  # always two draws: the stream does not depend on the outcome
    if drop >= probability:
        return None
    modality = "rgb" if choice < rgb_share else "thermal"
    item[modality] = np.zeros_like(item[modality])
    return modality


def check_item(item: Item, rotated: bool) -> None:
    """Shapes and dtypes of an item; errors name the field."""
    rgb, thermal = item.get("rgb"), item.get("thermal")
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        raise ValueError(f"item['rgb'] must be a uint8 HxWx3 array, got {_describe(rgb)}")
    if (
        not isinstance(thermal, np.ndarray)
        or thermal.dtype != np.float32
        or thermal.shape != rgb.shape[:2]
    ):
        raise ValueError(
            f"item['thermal'] must be float32 {rgb.shape[:2]} (the RGB size), got {_describe(thermal)}"
        )
    boxes, labels = np.asarray(item.get("boxes")), np.asarray(item.get("labels"))
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"item['boxes'] must have shape [N, 5], got {boxes.shape}")
    if labels.shape != (len(boxes),):
        raise ValueError(f"item['labels'] must have shape [{len(boxes)}], got {labels.shape}")
    if not rotated and np.any(boxes[:, 4] != 0):
        raise ValueError(
            "item['boxes'] has non-zero angles but the augmentation is set to rotated=False"
        )
    labelled = item.get("labelled", True)
    if not isinstance(labelled, (bool, np.bool_)):
        raise ValueError(f"item['labelled'] must be a bool, got {_describe(labelled)}")
    if not labelled and len(boxes):
        raise ValueError(f"item['labelled'] is False but the item has {len(boxes)} box(es)")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


class PairedAugment:
    """Seeded augmentation pipeline (see the module docstring); a dataset ``transform``.

    The generator is seeded with ``seed`` in the main process, and with (seed, worker seed) in
    each DataLoader worker, so runs repeat exactly when the DataLoader's generator is seeded.
    """

    def __init__(self, config: AugmentConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        self._rng = np.random.default_rng([self.seed])
        self._worker_seed: int | None = None

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self._rng = np.random.default_rng([self.seed, info.seed % 2**63])
        return self._rng

    def __call__(self, item: Item, rng: np.random.Generator | None = None) -> Item:
        """Augmented copy of ``item``; pass ``rng`` to drive it from your own generator."""
        config = self.config
        check_item(item, config.rotated)
        rng = rng if rng is not None else self._generator()
        height, width = item["rgb"].shape[:2]
        plan = plan_geometry(width, height, config, rng)
        out = apply_geometry(item, plan, config)
        out["rgb"] = jitter_rgb(out["rgb"], rng, config)
        out["thermal"] = jitter_thermal(out["thermal"], rng, config)
        if rng.random() < config.cutout_probability:
            cross_modal_cutout(out, rng, config.cutout_scale, plan.content())
        if rng.random() < config.mix_probability:
            cross_modal_mix(out, rng, config.mix_grid, config.mix_fraction, plan.content())
        modality_dropout(out, rng, config.dropout_probability, config.dropout_rgb_share)
        return out
