"""SceneGenerator: formats, labels that match the pixels, day/night contrast, determinism, speed."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
import shapely

from fusion_perception.synthetic import CLASS_NAMES, THERMAL_RANGE, Scene, SceneGenerator


def _corners(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h, a = (float(v) for v in box)
    ex, ey = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    return np.array([cx, cy]) + signs[:, :1] * ex * w / 2 + signs[:, 1:] * ey * h / 2


def _contrast_to_noise(image: np.ndarray, box: np.ndarray) -> float:
    """|mean(core of the box) - mean(ring around it)| / std(ring), for an upright box."""
    cx, cy, w, h = (float(v) for v in box[:4])
    H, W = image.shape
    core = image[int(cy - h / 4) : int(cy + h / 4), int(cx - w / 8) : int(cx + w / 8) + 1]
    pad = max(3, int(0.5 * w))
    y0, y1 = max(0, int(cy - h / 2) - pad), min(H, int(cy + h / 2) + pad)
    x0, x1 = max(0, int(cx - w / 2) - pad), min(W, int(cx + w / 2) + pad)
    ring_mask = np.ones((y1 - y0, x1 - x0), bool)
    ring_mask[
        max(0, int(cy - h / 2) - 1 - y0) : int(cy + h / 2) + 2 - y0,
        max(0, int(cx - w / 2) - 1 - x0) : int(cx + w / 2) + 2 - x0,
    ] = False
    ring = image[y0:y1, x0:x1][ring_mask]
    return abs(float(core.mean()) - float(ring.mean())) / max(float(ring.std()), 1e-6)


@pytest.mark.parametrize("rotated", [False, True])
def test_scene_format_and_boxes_inside_image(rotated: bool) -> None:
    gen = SceneGenerator(160, 128, classes=CLASS_NAMES, seed=1, rotated=rotated, max_objects=6)
    total, angles = 0, []
    for _ in range(15):
        scene = gen.sample()
        assert isinstance(scene, Scene)
        assert scene.rgb.shape == (128, 160, 3) and scene.rgb.dtype == np.uint8
        assert scene.thermal_raw.shape == (128, 160) and scene.thermal_raw.dtype == np.uint16
        assert scene.thermal_raw.max() <= 16383
        assert scene.boxes.dtype == np.float32 and scene.boxes.shape == (len(scene.labels), 5)
        assert scene.labels.dtype == np.int64 and scene.class_names == CLASS_NAMES
        assert ((scene.labels >= 0) & (scene.labels < len(CLASS_NAMES))).all()
        for box in scene.boxes:
            corners = _corners(box)
            assert box[2] > 0 and box[3] > 0
            if rotated:
                # A tilted object cut by the frame keeps its orientation: corners may stick out,
                # but the box describes the visible part, so most of it lies in the image.
                assert box[2] >= box[3] and -math.pi / 2 <= box[4] < math.pi / 2
                assert 0 <= box[0] <= 160 and 0 <= box[1] <= 128
                inside = shapely.Polygon(corners).intersection(shapely.box(0, 0, 160, 128)).area
                assert inside >= 0.45 * box[2] * box[3], box  # a corner cut leaves >= half
            else:
                assert corners.min() >= 0 and (corners <= [160, 128]).all(), box
                assert box[4] == 0
        total += len(scene.labels)
        angles.extend(np.abs(scene.boxes[:, 4]).tolist())
    assert total > 10
    if rotated:  # headings are random: most oriented boxes are visibly tilted
        assert np.mean(np.array(angles) > 0.05) > 0.5


def test_background_and_people_temperatures_are_camera_like() -> None:
    gen = SceneGenerator(160, 128, classes=("person",), seed=4, max_objects=3)
    for index in range(6):
        scene = gen.sample(index)
        ground = scene.thermal_raw[int(0.4 * 128) :]
        assert 6800 < np.median(ground) < 8800
        for box in scene.boxes:
            cx, cy, w, h = (int(v) for v in box[:4])
            torso = scene.thermal_raw[
                cy - h // 8 : cy + 1, cx - max(1, w // 8) : cx + max(1, w // 8) + 1
            ]
            assert 500 < float(torso.mean()) - float(np.median(ground)) < 2200
    assert THERMAL_RANGE[0] < 7000 and THERMAL_RANGE[1] > 10000


def test_person_boxes_fit_the_hot_silhouette() -> None:
    """Ground-view boxes enclose the drawn person tightly: compare with the thermal hot blob."""
    gen = SceneGenerator(
        160, 128, classes=("person",), seed=7, max_objects=1, night_probability=1.0
    )
    checked = 0
    for index in range(30):
        scene = gen.sample(index)
        if len(scene.boxes) != 1 or scene.boxes[0, 3] < 24:  # thin limbs of tiny people blur away
            continue
        cx, cy, w, h, _ = (float(v) for v in scene.boxes[0])
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        x0, y0 = max(0, int(box[0]) - 8), max(0, int(box[1]) - 8)
        x1, y1 = min(160, int(box[2]) + 8), min(128, int(box[3]) + 8)
        window = scene.thermal_raw[y0:y1, x0:x1].astype(np.float32)
        outside = np.ones(window.shape, bool)
        outside[int(box[1]) - y0 : int(box[3]) - y0, int(box[0]) - x0 : int(box[2]) - x0] = False
        hot = (window > np.median(window[outside]) + 450).astype(np.uint8)
        _, blobs = cv2.connectedComponents(hot)
        torso = blobs[int(cy - h / 8) - y0, int(cx) - x0]
        assert torso > 0
        ys, xs = np.nonzero(blobs == torso)
        blob = np.array([xs.min() + x0, ys.min() + y0, xs.max() + x0 + 1, ys.max() + y0 + 1])
        assert np.abs(blob - box).max() <= 2.0, (box, blob)
        checked += 1
    assert checked >= 5


def test_night_people_are_nearly_invisible_in_rgb_but_hot_in_thermal() -> None:
    def contrasts(night_probability: float) -> tuple[list[float], list[float]]:
        gen = SceneGenerator(
            320,
            256,
            classes=("person",),
            seed=11,
            night_probability=night_probability,
            max_objects=4,
        )
        rgb_cnr, thermal_cnr = [], []
        for index in range(8):
            scene = gen.sample(index)
            assert scene.is_night == (night_probability == 1.0)
            grey = scene.rgb.astype(np.float32).mean(axis=2)
            thermal = scene.thermal_raw.astype(np.float32)
            for box in scene.boxes:
                if box[2] >= 6 and box[3] >= 16:
                    rgb_cnr.append(_contrast_to_noise(grey, box))
                    thermal_cnr.append(_contrast_to_noise(thermal, box))
        return rgb_cnr, thermal_cnr

    night_rgb, night_thermal = contrasts(1.0)
    day_rgb, _ = contrasts(0.0)
    assert len(night_rgb) >= 8 and len(day_rgb) >= 8
    assert np.median(night_thermal) > 3.0
    assert np.median(night_rgb) < 0.3 * np.median(night_thermal)
    assert np.median(day_rgb) > 2.0 * np.median(night_rgb)


def test_same_seed_same_scenes_and_indexed_samples_are_order_free() -> None:
    a = SceneGenerator(96, 64, seed=5, max_objects=4)
    b = SceneGenerator(96, 64, seed=5, max_objects=4)
    for _ in range(3):
        sa, sb = a.sample(), b.sample()
        assert np.array_equal(sa.rgb, sb.rgb) and np.array_equal(sa.thermal_raw, sb.thermal_raw)
        assert np.array_equal(sa.boxes, sb.boxes) and np.array_equal(sa.labels, sb.labels)
    first = a.sample(3)
    b.sample(0)
    again = b.sample(3)
    assert np.array_equal(first.rgb, again.rgb) and np.array_equal(first.boxes, again.boxes)
    other = SceneGenerator(96, 64, seed=6, max_objects=4).sample(3)
    assert not np.array_equal(first.rgb, other.rgb)


def test_stream_moves_objects_smoothly_and_sequence_matches_render() -> None:
    gen = SceneGenerator(160, 128, classes=("person", "car"), seed=2, max_objects=4, rotated=True)
    frames = list(gen.sequence(3, fps=10.0))
    for i, frame in enumerate(frames):
        again = gen.render(i / 10.0)
        assert np.array_equal(frame.rgb, again.rgb) and np.array_equal(frame.boxes, again.boxes)
    start, next_frame, later = gen.render(0.0), gen.render(1 / 30), gen.render(3.0)
    assert len(start.boxes) > 0
    steps = [np.linalg.norm(next_frame.boxes[:, :2] - box[:2], axis=1).min() for box in start.boxes]
    assert max(steps) < 6.0  # at most a few pixels per frame at 30 Hz
    moved = (
        [np.linalg.norm(later.boxes[:, :2] - box[:2], axis=1).min() for box in start.boxes]
        if len(later.boxes)
        else [99.0]
    )
    assert max(moved) > 5.0
    with pytest.raises(ValueError, match="t_seconds"):
        gen.render(-1.0)
    with pytest.raises(ValueError, match="fps"):
        next(gen.sequence(2, fps=0.0))


def test_invalid_settings_name_the_argument() -> None:
    with pytest.raises(ValueError, match="classes"):
        SceneGenerator(64, 64, classes=("person", "dragon"))
    with pytest.raises(ValueError, match="width"):
        SceneGenerator(8, 64)
    with pytest.raises(ValueError, match="night_probability"):
        SceneGenerator(64, 64, night_probability=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        SceneGenerator(64, 64, max_objects=-1)
    with pytest.raises(ValueError, match="index"):
        SceneGenerator(64, 64).sample(-2)


def test_frame_time_640x512_is_reported() -> None:
    gen = SceneGenerator(640, 512, classes=("person", "car"), seed=0, max_objects=8)
    gen.sample()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        gen.sample()
        times.append(time.perf_counter() - start)
    stream = []
    for i in range(5):
        start = time.perf_counter()
        gen.render(i / 30)
        stream.append(time.perf_counter() - start)
    print(
        f"\nsynthetic 640x512: sample {1e3 * min(times):.1f} ms, render {1e3 * min(stream):.1f} ms (best of 5)"
    )
    assert min(times) < 0.2 and min(stream) < 0.2
