"""The frame path every consumer shares, without ROS: camera messages -> arrays -> thermal
normalization -> registration into RGB pixels -> one forward pass.

The node, `fusion-infer` and `fusion-bag2dataset` all go through this module, so a pair is
decoded, normalized and registered the same way live, offline and while building a dataset.
Decoding works on anything shaped like the ROS messages (rclpy or rosbags): an object with
``format`` is a CompressedImage, anything else an Image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion_perception.engine import EngineResult, FusionEngine
from fusion_perception.image_codec import (
    ImageEncodingError,
    decode_compressed_rgb,
    decode_compressed_thermal,
    decode_msg,
    lookup_encoding,
    to_rgb8,
)
from fusion_perception.pairing import STREAMS
from fusion_perception.registration import Registration
from fusion_perception.thermal import ThermalNormalizer
from fusion_perception.tracking import IoUTracker

THERMAL_ENCODINGS = ("mono16", "16UC1", "mono8", "8UC1", "32FC1")


def decode_rgb_message(msg: Any) -> np.ndarray:
    """An RGB Image (bgr8, rgb8, bgra8, rgba8, mono8) or CompressedImage -> uint8 HxWx3, RGB."""
    if hasattr(msg, "format"):
        return decode_compressed_rgb(bytes(msg.data), msg.format)
    return to_rgb8(decode_msg(msg), msg.encoding)


def decode_thermal_message(msg: Any) -> tuple[np.ndarray, str]:
    """A thermal Image or CompressedImage (16-bit PNG) -> (raw HxW copy in native byte order:
    uint16 counts, uint8 or float32 degrees; its encoding)."""
    if hasattr(msg, "format"):
        return decode_compressed_thermal(bytes(msg.data), msg.format)
    if msg.encoding not in THERMAL_ENCODINGS:
        raise ImageEncodingError(
            f"encoding: {msg.encoding!r} is not a thermal encoding ({', '.join(THERMAL_ENCODINGS)})"
        )
    raw = decode_msg(msg)
    return raw.astype(raw.dtype.newbyteorder("="), copy=True), msg.encoding


class FrameError(ValueError):
    """A pair that cannot be processed. ``kind`` names its counter: the category and the
    message's leading field, e.g. "encoding.thermal.data" or "input.size mismatch"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class FrameOutput:
    rgb: np.ndarray  # uint8 HxWx3, what the network saw (blank in thermal-only fallback)
    thermal: np.ndarray  # float32 HxW in [0, 1], registered into RGB pixels
    result: EngineResult
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)  # kind -> text, for the log


class FramePipeline:
    """Decode -> normalize -> register -> infer (-> track), for one stream of pairs (the
    normalizer's and the tracker's state follow the stream; `reset` them between unrelated
    images)."""

    def __init__(
        self,
        engine: FusionEngine,
        normalizer: ThermalNormalizer,
        registration: Registration | None = None,
        tracker: IoUTracker | None = None,
    ) -> None:
        self.engine, self.normalizer, self.registration = engine, normalizer, registration
        self.tracker = tracker
        self.thermal_encoding: str | None = None

    def reset(self) -> None:
        self.normalizer.reset()
        self.reset_tracks()

    def reset_tracks(self) -> None:
        """Drop every track (the stamps jumped back: old tracks would match by accident)."""
        if self.tracker is not None:
            self.tracker.reset()

    def run_messages(self, rgb_msg: Any | None, thermal_msg: Any | None) -> FrameOutput:
        """One pair of camera messages (either may be None: the fallbacks). Every problem with
        the input raises FrameError naming its counter; an encoding change mid-stream is in
        ``warnings``."""
        t0 = time.perf_counter()
        warnings = {}
        try:
            raw = None
            if thermal_msg is not None:
                raw, encoding = decoded("thermal", decode_thermal_message, thermal_msg)
                warning = self.follow_encoding(encoding)
                if warning is not None:
                    warnings[f"thermal_encoding_changed.{encoding}"] = warning
            rgb = None if rgb_msg is None else decoded("rgb", decode_rgb_message, rgb_msg)
            decode_ms = (time.perf_counter() - t0) * 1e3
            frame = self.run(rgb, raw)
        except (ImageEncodingError, ValueError, TypeError) as exc:
            category = "encoding" if isinstance(exc, ImageEncodingError) else "input"
            fields = [f.strip() for f in str(exc).split(":", 2)]
            leading = ".".join(fields[:2]) if fields[0] in STREAMS else fields[0]
            raise FrameError(f"{category}.{leading[:48]}", str(exc)) from None
        frame.timings_ms = {"decode": decode_ms, **frame.timings_ms}
        frame.warnings = warnings
        return frame

    def follow_encoding(self, encoding: str) -> str | None:
        """A driver that switches units (mono16 counts -> 32FC1 degrees, -> mono8) mid-stream:
        the normalizer's temporal state is in the old units, so restart it. Returns the warning
        to give (None when nothing changed)."""
        previous, self.thermal_encoding = self.thermal_encoding, encoding
        if previous is None or previous == encoding:
            return None
        if lookup_encoding(previous).dtype == lookup_encoding(encoding).dtype:
            return None  # e.g. mono16 <-> 16UC1: same values
        self.normalizer.reset()
        note = ""
        eight_bit = np.dtype(np.uint8) in (lookup_encoding(e).dtype for e in (previous, encoding))
        if self.normalizer.scale_8bit and eight_bit:
            lo, hi = self.normalizer.bounds
            note = f"; 8-bit frames are divided by 255, deeper ones mapped from {lo:g}..{hi:g}"
        elif self.normalizer.scheme == "fixed_range":
            lo, hi = self.normalizer.bounds
            note = f"; fixed_range {lo:g}..{hi:g} was chosen for one of them, check it"
        return (
            f"thermal encoding changed from {previous} to {encoding}: the thermal "
            f"normalization ({self.normalizer.scheme}) restarted in the new units{note}"
        )

    def run(self, rgb: np.ndarray | None, thermal_raw: np.ndarray | None) -> FrameOutput:
        """One pair; either camera may be missing (the fallbacks): a missing RGB frame is blank
        at the registered thermal size, a missing thermal frame is zeros. A size mismatch
        without registration raises ValueError ("size mismatch: ...")."""
        if rgb is None and thermal_raw is None:
            raise ValueError("pair: neither an RGB nor a thermal frame")
        t0 = time.perf_counter()
        thermal = None
        if thermal_raw is not None:
            thermal = self.normalizer(thermal_raw)
            if self.registration is not None:
                thermal, _ = self.registration.warp(thermal)  # now in RGB pixels
        if rgb is None:
            rgb = np.zeros((*thermal.shape, 3), np.uint8)
        if thermal is None:
            thermal = np.zeros(rgb.shape[:2], np.float32)
        elif thermal.shape != rgb.shape[:2]:
            raise ValueError(
                f"size mismatch: thermal {thermal.shape[1]}x{thermal.shape[0]} vs rgb "
                f"{rgb.shape[1]}x{rgb.shape[0]} and no registration (calibration) between them"
            )
        t1 = time.perf_counter()
        result = self.engine.infer(rgb, thermal)
        timings = {"normalize": (t1 - t0) * 1e3, **result.timings_ms}
        if self.tracker is not None:
            t2 = time.perf_counter()
            result.detections = self.tracker.update(result.detections)
            timings["track"] = (time.perf_counter() - t2) * 1e3
        return FrameOutput(rgb, thermal, result, timings)


def decoded(source: str, decode: Any, msg: Any) -> Any:
    """``decode(msg)`` with the camera (or topic) named in an encoding error."""
    try:
        return decode(msg)
    except ImageEncodingError as exc:
        raise ImageEncodingError(f"{source}: {exc}") from None
