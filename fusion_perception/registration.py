"""Thermal -> RGB registration (ROS-free): a 3x3 homography from a calibration YAML warps the
thermal frame into the RGB camera's pixels, with a mask of the pixels thermal covers.

Sizes are written (width, height), as OpenCV and calibration files do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusion_perception.schema import read_yaml_mapping
from fusion_perception.thermal import THERMAL_DTYPES


def _parse_size(value: Any, key: str) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        or not all(v > 0 for v in value)
    ):
        raise ValueError(
            f"calibration {key!r} must be [width, height] positive ints, got {value!r}"
        )
    return int(value[0]), int(value[1])


def _parse_homography(value: Any) -> np.ndarray:
    try:
        h = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"calibration 'homography' must be numbers, got {value!r}") from exc
    if h.shape == (9,):
        h = h.reshape(3, 3)
    if h.shape != (3, 3):
        raise ValueError(
            f"calibration 'homography' must be 3x3 (or 9 numbers), got shape {h.shape}"
        )
    if not np.isfinite(h).all():
        raise ValueError(f"calibration 'homography' has non-finite entries: {h.tolist()}")
    if abs(np.linalg.det(h)) < 1e-12 * max(1.0, float(np.abs(h).max()) ** 3):
        raise ValueError(f"calibration 'homography' is singular: {h.tolist()}")
    return h


# Half of OpenCV's bilinear sub-pixel step (1/32 px): source points this close to the last
# pixel are rounded onto it by warpPerspective, so they take no weight from the border.
_EDGE_TOLERANCE = 1.0 / 64.0


@dataclass(frozen=True, eq=False)
class Registration:
    """Warps thermal into the RGB frame with a 3x3 homography.

    ``homography`` maps thermal pixel coordinates (u, v, 1) to RGB pixel coordinates,
    ``rgb_size`` and ``thermal_size`` are (width, height). Accurate for a planar or distant
    scene (UAV altitude); parallax between the lenses is not modelled.
    """

    homography: np.ndarray
    rgb_size: tuple[int, int]
    thermal_size: tuple[int, int]

    def __post_init__(self) -> None:
        h = _parse_homography(self.homography)
        h.setflags(write=False)
        object.__setattr__(self, "homography", h)
        object.__setattr__(self, "rgb_size", _parse_size(self.rgb_size, "rgb_size"))
        object.__setattr__(self, "thermal_size", _parse_size(self.thermal_size, "thermal_size"))

    @classmethod
    def identity(cls, size: tuple[int, int]) -> Registration:
        """Thermal and RGB already registered and of the same (width, height)."""
        return cls(np.eye(3), size, size)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Registration:
        """Keys: ``homography`` (3x3), ``rgb_size`` and ``thermal_size`` ([w, h]); optional
        ``metadata`` (free-form, ignored)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"calibration must be a mapping, got {type(d).__name__}")
        required = ("homography", "rgb_size", "thermal_size")
        for key in required:
            if key not in d:
                raise ValueError(f"calibration is missing key {key!r}")
        unknown = sorted(set(d) - {*required, "metadata"})
        if unknown:
            raise ValueError(
                f"calibration has unknown key(s) {unknown}; allowed: {[*required, 'metadata']}"
            )
        return cls(d["homography"], d["rgb_size"], d["thermal_size"])

    @classmethod
    def from_yaml(cls, path: str | Path) -> Registration:
        """Load a calibration YAML (see config/calibration_example.yaml)."""
        data = read_yaml_mapping(path, "calibration", ValueError)
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form of the calibration, for dataset manifests."""
        return {
            "homography": self.homography.tolist(),
            "rgb_size": list(self.rgb_size),
            "thermal_size": list(self.thermal_size),
        }

    @cached_property
    def is_identity(self) -> bool:
        scale = self.homography[2, 2]
        if scale == 0 or self.rgb_size != self.thermal_size:
            return False
        return bool(np.allclose(self.homography / scale, np.eye(3), rtol=0.0, atol=1e-12))

    @cached_property
    def _valid_mask(self) -> np.ndarray:
        """bool HxW (RGB size): RGB pixels whose bilinear source lies fully inside thermal."""
        w, h = self.rgb_size
        tw, th = self.thermal_size
        inv = np.linalg.inv(self.homography)
        x = np.arange(w, dtype=np.float64)[None, :]
        y = np.arange(h, dtype=np.float64)[:, None]
        z = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            sx = (inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / z
            sy = (inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / z
        eps = _EDGE_TOLERANCE
        mask = (sx >= -eps) & (sx <= tw - 1 + eps) & (sy >= -eps) & (sy <= th - 1 + eps)
        mask.setflags(write=False)
        return mask

    def warp(self, thermal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Register a thermal frame (HxW, uint8/uint16/float32, raw or normalized).

        Returns (registered, valid_mask): registered has the RGB size and the input dtype,
        bilinear, 0 where invalid; valid_mask is bool HxW, True where the value comes from
        thermal pixels only.
        """
        if not isinstance(thermal, np.ndarray):
            raise TypeError(f"thermal must be a numpy array, got {type(thermal).__name__}")
        if thermal.ndim != 2:
            raise ValueError(f"thermal must be HxW, got shape {thermal.shape}")
        dtype = thermal.dtype.newbyteorder("=")
        if dtype not in THERMAL_DTYPES:
            raise TypeError(f"thermal dtype must be uint8, uint16 or float32, got {thermal.dtype}")
        size = (thermal.shape[1], thermal.shape[0])
        if size != self.thermal_size:
            raise ValueError(
                f"thermal image size (w, h) = {size} differs from the calibration's "
                f"thermal_size {self.thermal_size}"
            )
        src = np.ascontiguousarray(thermal, dtype=dtype)
        if self.is_identity:
            return src.copy(), self._valid_mask.copy()
        registered = cv2.warpPerspective(
            src,
            self.homography,
            self.rgb_size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        mask = self._valid_mask.copy()
        registered[~mask] = 0
        return registered, mask
