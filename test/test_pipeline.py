"""The ROS-free frame path: message decoding, normalization, registration, fallbacks, errors."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fusion_perception.engine import FusionEngine
from fusion_perception.image_codec import ImageEncodingError, encode
from fusion_perception.pipeline import (
    FrameError,
    FramePipeline,
    decode_rgb_message,
    decode_thermal_message,
)
from fusion_perception.registration import Registration
from fusion_perception.thermal import ThermalNormalizer, make_normalizer
from fusion_perception.tracking import IoUTracker, TrackerConfig


def image_msg(array: np.ndarray, encoding: str) -> SimpleNamespace:
    """Anything shaped like sensor_msgs/Image (rclpy and rosbags messages are)."""
    data, step = encode(array, encoding)
    return SimpleNamespace(
        height=array.shape[0], width=array.shape[1], encoding=encoding, step=step,
        data=data, is_bigendian=False,
    )  # fmt: skip


def test_messages_decode_the_same_raw_or_compressed():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    counts = rng.integers(5000, 12000, (24, 32)).astype(np.uint16)
    rgb = decode_rgb_message(image_msg(bgr, "bgr8"))
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    png = SimpleNamespace(format="bgr8; png compressed", data=cv2.imencode(".png", bgr)[1])
    np.testing.assert_array_equal(decode_rgb_message(png), rgb)
    raw, encoding = decode_thermal_message(image_msg(counts, "mono16"))
    assert encoding == "mono16" and raw.flags.writeable  # a copy, safe to keep
    np.testing.assert_array_equal(raw, counts)
    packed = SimpleNamespace(format="mono16; png compressed", data=cv2.imencode(".png", counts)[1])
    np.testing.assert_array_equal(decode_thermal_message(packed)[0], counts)
    with pytest.raises(ImageEncodingError, match="'bgr8' is not a thermal encoding"):
        decode_thermal_message(image_msg(bgr, "bgr8"))


@pytest.fixture(scope="module")
def engine(node_checkpoint):
    return FusionEngine(node_checkpoint, device="cpu", score_threshold=0.3, warmup=0)


def test_pipeline_registers_and_runs_both_fallbacks(engine):
    normalizer = make_normalizer("fixed_range", lo=5000, hi=12000)
    small = np.full((64, 80), 8500, np.uint16)  # a thermal camera at half the RGB size
    registration = Registration([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]], (160, 128), (80, 64))
    pipeline = FramePipeline(engine, normalizer, registration)
    rgb = np.full((128, 160, 3), 90, np.uint8)
    frame = pipeline.run(rgb, small)
    assert frame.thermal.shape == (128, 160) and frame.result.fused_luma.shape == (128, 160)
    assert frame.thermal[64, 80] == pytest.approx(0.5)
    assert {"normalize", "forward"} <= set(frame.timings_ms)
    thermal_only = pipeline.run(None, small)  # a blank RGB frame at the registered size
    assert thermal_only.rgb.shape == (128, 160, 3) and not thermal_only.rgb.any()
    rgb_only = pipeline.run(rgb, None)
    assert not rgb_only.thermal.any()
    with pytest.raises(ValueError, match="neither an RGB nor a thermal frame"):
        pipeline.run(None, None)
    unregistered = FramePipeline(engine, normalizer)
    with pytest.raises(ValueError, match=r"size mismatch: thermal 80x64 vs rgb 160x128"):
        unregistered.run(rgb, small)


def test_an_encoding_change_restarts_the_normalizer_once(engine):
    pipeline = FramePipeline(engine, make_normalizer("percentile", p_lo=1, p_hi=99, ema=0.9))
    pipeline.run(None, np.linspace(7000, 9000, 64 * 80).reshape(64, 80).astype(np.uint16))
    assert pipeline.follow_encoding("mono16") is None
    assert pipeline.follow_encoding("16UC1") is None  # the same values under another name
    warning = pipeline.follow_encoding("32FC1")
    assert warning.startswith("thermal encoding changed from 16UC1 to 32FC1")
    # the bounds restarted in degrees: a 32FC1 frame is accepted and spans [0, 1]
    degrees = np.linspace(20, 40, 64 * 80, dtype=np.float32).reshape(64, 80)
    frame = pipeline.run(None, degrees)
    assert frame.thermal.min() == pytest.approx(0.0, abs=0.02)
    assert frame.thermal.max() == pytest.approx(1.0, abs=0.02)
    assert pipeline.follow_encoding("32FC1") is None


def test_camera_messages_in_results_and_named_counters_out(engine):
    """run_messages: decoding timed, an encoding change reported as a warning, every bad input
    a FrameError whose kind names the camera and the problem, and the tracker's ids attached."""
    # the checkpoint default for a range in counts: mono8 frames are divided by 255
    counts_range = ThermalNormalizer("fixed_range", {"lo": 5000, "hi": 12000}, scale_8bit=True)
    pipeline = FramePipeline(engine, counts_range, tracker=IoUTracker(TrackerConfig(min_hits=1)))
    bgr = np.full((64, 80, 3), 90, np.uint8)
    bgr[20:44, 30:50] = 220
    counts = np.full((64, 80), 7000, np.uint16)
    counts[20:44, 30:50] = 11000
    frame = pipeline.run_messages(image_msg(bgr, "bgr8"), image_msg(counts, "mono16"))
    assert {"decode", "normalize", "forward", "track"} <= set(frame.timings_ms)
    assert frame.warnings == {}
    np.testing.assert_array_equal(frame.rgb, bgr[:, :, ::-1])
    assert len(frame.result.detections.ids) == len(frame.result.detections.boxes)
    as_mono8 = image_msg((counts // 64).astype(np.uint8), "mono8")
    changed = pipeline.run_messages(image_msg(bgr, "bgr8"), as_mono8)
    assert list(changed.warnings) == ["thermal_encoding_changed.mono8"]
    assert "8-bit frames are divided by 255" in changed.warnings["thermal_encoding_changed.mono8"]
    np.testing.assert_allclose(changed.thermal, (counts // 64) / 255.0, atol=1e-6)
    explicit = FramePipeline(engine, make_normalizer("fixed_range", lo=5000, hi=12000))
    with pytest.raises(FrameError, match="maps every uint8 value") as error:
        explicit.run_messages(image_msg(bgr, "bgr8"), as_mono8)  # would be a blank channel
    assert error.value.kind == "input.thermal.fixed_range", error.value.kind
    bad = {
        "encoding.thermal.encoding": (image_msg(bgr, "bgr8"), image_msg(bgr, "bgr8")),
        "input.size mismatch": (image_msg(bgr, "bgr8"), image_msg(counts[:32], "mono16")),
        "input.pair": (None, None),
    }
    for kind, (rgb_msg, thermal_msg) in bad.items():
        with pytest.raises(FrameError) as error:
            pipeline.run_messages(rgb_msg, thermal_msg)
        assert error.value.kind == kind, str(error.value)
