"""Thermal normalization, thermal->RGB registration and BT.601 Y/CbCr helpers (ROS-free).

The ROS node and the offline dataset builder both call this module, so a checkpoint trained
offline sees exactly the thermal values the node feeds it at run time.

Conventions: RGB images are numpy uint8 HxWx3 in RGB order. Raw thermal is HxW uint8 (mono8),
uint16 (mono16/16UC1 counts) or float32 (32FC1 degrees). Normalized thermal is float32 HxW in
[0, 1]. Sizes are written (width, height), as OpenCV and calibration files do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

__all__ = [
    "SCHEME_VERSIONS",
    "Registration",
    "ThermalNormalizer",
    "make_normalizer",
    "merge_fused_luma",
    "rgb_to_ycbcr",
    "to_uint8",
    "ycbcr_to_rgb",
]

# Bump a scheme's version whenever its output for the same input and params changes, so a
# checkpoint trained with the old behaviour is refused instead of silently fed other values.
SCHEME_VERSIONS: dict[str, int] = {"fixed_range": 1, "percentile": 1, "minmax": 1}

# Per-scheme parameters and defaults; None for "lo"/"hi" means required.
_SCHEME_PARAMS: dict[str, dict[str, float | None]] = {
    "fixed_range": {"lo": None, "hi": None, "nonfinite_fill": None},
    "percentile": {"p_lo": 1.0, "p_hi": 99.0, "ema": 0.9, "nonfinite_fill": None},
    "minmax": {"nonfinite_fill": None},
}
_REQUIRED_PARAMS = {"fixed_range": ("lo", "hi")}
_THERMAL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


PERCENTILE_SAMPLES = 65_536
# Percentile scheme, outlier guard: a frame whose percentile bounds disagree with the smoothed ones
# by more than this factor (span ratio, or distance from the current range in spans) is an outlier
# (a glitch frame of +-3e38 from a 32FC1 driver, a flat shutter/NUC frame) and leaves the EMA alone;
# OUTLIER_FRAMES such frames in a row mean the scene really changed, and their bounds are adopted.
OUTLIER_FACTOR = 100.0
OUTLIER_FRAMES = 3


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate_params(scheme: str, params: Mapping[str, Any]) -> dict[str, float | None]:
    """Return the full, checked parameter dict of ``scheme`` (defaults filled in)."""
    allowed = _SCHEME_PARAMS[scheme]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for thermal scheme {scheme!r}; "
            f"allowed: {sorted(allowed)}"
        )
    for name in _REQUIRED_PARAMS.get(scheme, ()):
        if params.get(name) is None:
            raise ValueError(f"thermal scheme {scheme!r} requires parameter {name!r}")
    out: dict[str, float | None] = {}
    for name, default in allowed.items():
        value = params.get(name, default)
        if value is None:
            out[name] = None
            continue
        if not _is_real(value) or not math.isfinite(float(value)):
            raise ValueError(f"thermal parameter {name!r} must be a finite number, got {value!r}")
        out[name] = float(value)
    fill = out["nonfinite_fill"]
    if fill is not None and not 0.0 <= fill <= 1.0:
        raise ValueError(f"thermal parameter 'nonfinite_fill' must be in [0, 1], got {fill!r}")
    if scheme == "fixed_range" and not out["hi"] > out["lo"]:
        raise ValueError(
            f"thermal parameter 'hi' ({out['hi']!r}) must be greater than 'lo' ({out['lo']!r})"
        )
    if scheme == "percentile":
        if not 0.0 <= out["p_lo"] < out["p_hi"] <= 100.0:
            raise ValueError(
                "thermal parameters must satisfy 0 <= p_lo < p_hi <= 100, got "
                f"p_lo={out['p_lo']!r}, p_hi={out['p_hi']!r}"
            )
        if not 0.0 <= out["ema"] < 1.0:
            raise ValueError(f"thermal parameter 'ema' must be in [0, 1), got {out['ema']!r}")
    return out


def _thermal_values(image: Any) -> tuple[np.ndarray, np.ndarray | None, np.dtype]:
    """Check a raw thermal frame; return (float32 HxW copy, finite mask or None, native dtype).

    The finite mask is only returned when some pixel is NaN/inf (float input).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"thermal image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"thermal image must be HxW or HxWx1, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"thermal image is empty (shape {image.shape})")
    dtype = image.dtype.newbyteorder("=")
    if dtype not in _THERMAL_DTYPES:
        raise TypeError(
            f"thermal image dtype must be uint8 (mono8), uint16 (mono16/16UC1) or float32 "
            f"(32FC1), got {image.dtype}"
        )
    values = image.astype(np.float32)
    if dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            return values, finite, dtype
    return values, None, dtype


# Beyond this magnitude float32 arithmetic on the bounds can overflow (hi - lo > 3.4e38).
_FLOAT32_SAFE = 1e37


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 1] and clip; a flat range (hi <= lo) gives zeros."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    if max(abs(lo), abs(hi)) > _FLOAT32_SAFE:  # huge finite bounds: float64 avoids inf/inf = NaN
        wide = (values.astype(np.float64) - lo) / (hi - lo)
        return np.clip(wide, 0.0, 1.0).astype(np.float32)
    out = (values - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def _min_span(dtype: np.dtype) -> float:
    """The smallest meaningful range of a frame: one count for integers, a millidegree for float."""
    return 1.0 if dtype.kind in "ui" else 1e-3


def _bounds_agree(frame: tuple[float, float], state: tuple[float, float], floor: float) -> bool:
    """Whether a frame's (lo, hi) is within OUTLIER_FACTOR of the smoothed (lo, hi)."""
    span_frame = max(frame[1] - frame[0], floor)
    span_state = max(state[1] - state[0], floor)
    if max(span_frame / span_state, span_state / span_frame) > OUTLIER_FACTOR:
        return False
    reach = OUTLIER_FACTOR * span_state
    return frame[0] >= state[0] - reach and frame[1] <= state[1] + reach


class ThermalNormalizer:
    """Named, versioned thermal normalization: raw HxW frame -> float32 HxW in [0, 1].

    Schemes (raw units = counts for uint16, 0..255 for uint8, degrees for float32):
      - ``fixed_range(lo, hi)``: (x - lo) / (hi - lo), clipped. Stateless; the choice when the
        sensor is radiometric and the scene range is known.
      - ``percentile(p_lo=1, p_hi=99, ema=0.9)``: the frame's p_lo/p_hi percentiles are the
        bounds, smoothed over time as ``bound = ema * previous + (1 - ema) * frame`` so
        automatic gain does not flicker; the first frame (after ``reset()``) sets them directly.
        A frame whose bounds differ from the smoothed ones by orders of magnitude
        (``OUTLIER_FACTOR``: a driver glitch such as +-3e38 in 32FC1, a flat shutter frame) is
        normalized with the smoothed bounds and does not update them; after
        ``OUTLIER_FRAMES`` such frames in a row the new range is taken over directly.
      - ``minmax()``: the frame's own min/max (flickers; for display and stills).
    Every scheme takes ``nonfinite_fill``: None (default) rejects frames containing NaN/inf;
    a value in [0, 1] is written to those pixels instead (bounds use the finite pixels only).
    A frame with no contrast (hi <= lo) normalizes to zeros.

    Holds the EMA state, so use one instance per stream, from one thread.
    """

    def __init__(self, scheme: str, params: Mapping[str, Any] | None = None) -> None:
        if scheme not in SCHEME_VERSIONS:
            raise ValueError(
                f"unknown thermal normalization scheme {scheme!r}; "
                f"must be one of {sorted(SCHEME_VERSIONS)}"
            )
        self._scheme = scheme
        self._params = _validate_params(scheme, params or {})
        self._bounds: tuple[float, float] | None = None
        self._state_dtype: np.dtype | None = None
        self._outliers: list[tuple[float, float]] = []  # consecutive outlier frames' bounds
        self.outlier_frames = 0  # frames whose bounds were rejected as outliers, since creation

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def version(self) -> int:
        return SCHEME_VERSIONS[self._scheme]

    @property
    def params(self) -> dict[str, float | None]:
        return dict(self._params)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(lo, hi) in raw units used for the last frame (fixed_range: always its params)."""
        if self._scheme == "fixed_range":
            return self._params["lo"], self._params["hi"]
        return self._bounds

    @property
    def state_dtype(self) -> np.dtype | None:
        """The dtype (units) the percentile state holds bounds in; None without state."""
        return self._state_dtype

    def reset(self) -> None:
        """Forget the temporal state (call on a new sequence or a sensor change)."""
        self._bounds = None
        self._state_dtype = None
        self._outliers = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalize one raw frame (HxW or HxWx1; uint8, uint16 or float32) to float32 HxW."""
        values, finite, dtype = _thermal_values(image)
        fill = self._params["nonfinite_fill"]
        sample = values
        if finite is not None:
            bad = int(finite.size - np.count_nonzero(finite))
            if fill is None:
                raise ValueError(
                    f"thermal image has {bad} non-finite (NaN/inf) pixel(s) of {finite.size}; "
                    "pass nonfinite_fill=<value in [0, 1]> to replace them"
                )
            if bad == finite.size:
                raise ValueError("thermal image has no finite pixel; cannot normalize it")
            sample = values[finite]
        lo, hi = self._frame_bounds(sample, dtype)
        out = _scale(values, lo, hi)
        if finite is not None:
            out[~finite] = fill
        return out

    def _frame_bounds(self, sample: np.ndarray, dtype: np.dtype) -> tuple[float, float]:
        p = self._params
        if self._scheme == "fixed_range":
            return p["lo"], p["hi"]
        if self._scheme == "minmax":
            self._bounds = (float(sample.min()), float(sample.max()))
            return self._bounds
        if self._state_dtype is not None and dtype != self._state_dtype:
            raise ValueError(
                f"thermal image dtype changed from {self._state_dtype} to {dtype} while the "
                "percentile EMA holds bounds in the old units; call reset() first"
            )
        if sample.size > PERCENTILE_SAMPLES:
            # A regular subsample estimates the percentiles of a thermal frame to a fraction of a
            # percent of its range (640x512 synthetic: 2-5 counts of 2150) in under a millisecond.
            step = math.ceil(math.sqrt(sample.size / PERCENTILE_SAMPLES))
            sample = sample[::step, ::step] if sample.ndim == 2 else sample[:: step * step]
        lo, hi = (float(v) for v in np.percentile(sample, [p["p_lo"], p["p_hi"]]))
        if self._bounds is not None:
            if not _bounds_agree((lo, hi), self._bounds, _min_span(dtype)):
                self.outlier_frames += 1
                self._outliers.append((lo, hi))
                if len(self._outliers) < OUTLIER_FRAMES:
                    return self._bounds  # one glitch frame: keep the smoothed bounds
                # The range really changed: restart from the newest frames, unless they
                # disagree among themselves too (then keep waiting for a steady range).
                recent = self._outliers[-OUTLIER_FRAMES:]
                floor = _min_span(dtype)
                if not all(_bounds_agree(b, recent[-1], floor) for b in recent):
                    return self._bounds
                self._outliers = []
                self._bounds = (lo, hi)
                return self._bounds
            self._outliers = []
            ema = p["ema"]
            lo = ema * self._bounds[0] + (1.0 - ema) * lo
            hi = ema * self._bounds[1] + (1.0 - ema) * hi
        self._bounds = (lo, hi)
        self._state_dtype = dtype
        return self._bounds

    def to_dict(self) -> dict[str, Any]:
        """{"scheme", "version", "params"} for checkpoints and dataset manifests."""
        return {"scheme": self._scheme, "version": self.version, "params": self.params}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThermalNormalizer:
        """Rebuild from ``to_dict()`` output; refuses unknown keys and other scheme versions."""
        if not isinstance(d, Mapping):
            raise TypeError(f"thermal normalization spec must be a mapping, got {type(d).__name__}")
        keys = set(d)
        if keys != {"scheme", "version", "params"}:
            raise ValueError(
                "thermal normalization spec must have exactly the keys "
                f"['params', 'scheme', 'version'], got {sorted(keys)}"
            )
        scheme, version, params = d["scheme"], d["version"], d["params"]
        if scheme not in SCHEME_VERSIONS:
            raise ValueError(
                f"unknown thermal normalization scheme {scheme!r}; "
                f"must be one of {sorted(SCHEME_VERSIONS)}"
            )
        if version != SCHEME_VERSIONS[scheme]:
            raise ValueError(
                f"thermal scheme {scheme!r} version {version!r} is not supported; this code "
                f"implements version {SCHEME_VERSIONS[scheme]}"
            )
        if not isinstance(params, Mapping):
            raise TypeError(f"thermal spec 'params' must be a mapping, got {params!r}")
        return cls(scheme, params)

    def __repr__(self) -> str:
        return f"ThermalNormalizer({self._scheme!r}, v{self.version}, {self._params})"


def make_normalizer(scheme: str, **params: Any) -> ThermalNormalizer:
    """Build a normalizer, e.g. ``make_normalizer("percentile", p_lo=2, p_hi=98, ema=0.8)``."""
    return ThermalNormalizer(scheme, params)


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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"calibration file {path} is not valid YAML: {exc}") from exc
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
        if dtype not in _THERMAL_DTYPES:
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


# BT.601 full-range (JFIF) RGB -> YCbCr; Cb/Cr are centred on 128 (uint8) or 0.5 (float).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def _check_colour(image: Any, name: str) -> bool:
    """Validate an HxWx3 uint8 or float image; return True if it is uint8."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"{name} must be a non-empty HxWx3 array, got shape {image.shape}")
    if image.dtype == np.uint8:
        return True
    if image.dtype.kind != "f":
        raise TypeError(f"{name} dtype must be uint8 or float in [0, 1], got {image.dtype}")
    return False


def _affine(
    image: np.ndarray, matrix: np.ndarray, offset_in: float, offset_out: float
) -> np.ndarray:
    """Per pixel: matrix @ (pixel - [0, c_in, c_in]) + [0, c_out, c_out], in float32."""
    chroma_in = np.array([0.0, offset_in, offset_in], dtype=np.float32)
    chroma_out = np.array([0.0, offset_out, offset_out], dtype=np.float32)
    return (image.astype(np.float32) - chroma_in) @ matrix.astype(np.float32).T + chroma_out


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB HxWx3 -> YCbCr (channels Y, Cb, Cr), BT.601 full range.

    uint8 in -> uint8 out (rounded); float in [0, 1] -> float32 out (Cb, Cr centred on 0.5).
    """
    if _check_colour(rgb, "rgb"):
        out = _affine(rgb, _RGB_TO_YCBCR, 0.0, 128.0)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return _affine(rgb, _RGB_TO_YCBCR, 0.0, 0.5)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr``: uint8 -> uint8 (rounded), float -> float32; both clipped."""
    if _check_colour(ycbcr, "ycbcr"):
        out = _affine(ycbcr, _YCBCR_TO_RGB, 128.0, 0.0)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.clip(_affine(ycbcr, _YCBCR_TO_RGB, 0.5, 0.0), 0.0, 1.0)


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """float image in [0, 1] -> uint8 (x * 255 rounded, clipped), e.g. for mono8 output."""
    if not isinstance(image01, np.ndarray) or image01.dtype.kind != "f":
        raise TypeError(
            f"image01 must be a float numpy array, got {getattr(image01, 'dtype', type(image01))}"
        )
    return np.clip(np.rint(image01 * 255.0), 0, 255).astype(np.uint8)


def merge_fused_luma(fused_y: np.ndarray, rgb: np.ndarray, order: str = "rgb") -> np.ndarray:
    """Colour fused output: fused luma + the visible image's CbCr (BT.601 full range).

    ``fused_y`` is uint8 HxW, or float HxW in [0, 1]; ``rgb`` is uint8 HxWx3 of the same HxW.
    Returns uint8 HxWx3 in ``order`` ("rgb" or "bgr", so a bgr8 message needs no extra copy).
    OpenCV's uint8 YCrCb conversion does the work: the same coefficients as ``rgb_to_ycbcr``
    (chroma kept in 8 bits: at most two grey levels from the float path), about 20x faster than the float path at 640x512, which matters
    in the node's per-frame budget.
    """
    if not isinstance(fused_y, np.ndarray) or fused_y.ndim != 2 or fused_y.dtype.kind not in "fu":
        raise ValueError(
            "fused_y must be a float or uint8 HxW numpy array, got "
            f"{type(fused_y).__name__} {getattr(fused_y, 'shape', '')} "
            f"{getattr(fused_y, 'dtype', '')}"
        )
    if not _check_colour(rgb, "rgb"):
        raise TypeError(f"rgb must be uint8, got {rgb.dtype}")
    if fused_y.shape != rgb.shape[:2]:
        raise ValueError(f"fused_y shape {fused_y.shape} differs from rgb HxW {rgb.shape[:2]}")
    if order not in ("rgb", "bgr"):
        raise ValueError(f"order must be 'rgb' or 'bgr', got {order!r}")
    if fused_y.dtype.kind == "f":
        if not np.isfinite(fused_y).all():
            raise ValueError("fused_y contains NaN/inf")
        lo, hi = float(fused_y.min()), float(fused_y.max())
        if lo < -1e-4 or hi > 1.0 + 1e-4:
            raise ValueError(f"fused_y must be in [0, 1], got range [{lo}, {hi}]")
        fused_y = to_uint8(fused_y)
    elif fused_y.dtype != np.uint8:
        raise ValueError(f"fused_y must be uint8 when it is an integer array, got {fused_y.dtype}")
    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    ycrcb[:, :, 0] = fused_y
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB if order == "rgb" else cv2.COLOR_YCrCb2BGR)
