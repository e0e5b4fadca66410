"""BT.601 full-range Y/CbCr (ROS-free): the fused luma is merged back with the RGB frame's
chroma, so the fused image keeps the visible camera's colours. RGB images are uint8 HxWx3 in RGB
order or float in [0, 1].
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

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


def rgb_to_bgr(rgb: np.ndarray) -> np.ndarray:
    """A BGR copy of uint8 HxWx3 RGB (OpenCV: ~50x faster than copying a reversed numpy view,
    which matters once per published frame)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)


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
