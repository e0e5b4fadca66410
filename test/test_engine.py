"""The engine: letterbox geometry, device choice, outputs in original RGB pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_perception.engine import (
    FusionEngine,
    Letterbox,
    clip_to_image,
    select_device,
)


@pytest.mark.parametrize(("width", "height"), [(640, 512), (630, 460), (320, 240), (100, 300)])
def test_letterbox_round_trip(width, height):
    box = Letterbox.fit(width, height, 320, 256)
    new_w, new_h = box.content_size
    assert new_w <= 320 and new_h <= 256
    assert new_w == 320 or new_h == 256  # one side fills the input
    rng = np.random.default_rng(0)
    boxes = np.column_stack(
        [
            rng.uniform(0, width, 20),
            rng.uniform(0, height, 20),
            rng.uniform(1, 50, 20),
            rng.uniform(1, 50, 20),
            rng.uniform(-1, 1, 20),
        ]
    )
    np.testing.assert_allclose(box.boxes_to_original(box.boxes_to_input(boxes)), boxes, atol=1e-9)
    image = rng.integers(0, 255, (height, width), dtype=np.uint8)
    padded = box.apply(image, (320, 256), fill=0)
    assert padded.shape == (256, 320)
    back = box.crop_to_original(padded)
    assert back.shape == image.shape
    # Down- then up-sampling blurs, but the image must come back in place (not shifted).
    assert np.corrcoef(back.ravel().astype(float), image.ravel().astype(float))[0, 1] > 0.3


def test_letterbox_maps_a_marked_pixel():
    image = np.zeros((100, 200), np.uint8)
    image[40:60, 140:160] = 255
    box = Letterbox.fit(200, 100, 128, 128)
    padded = box.apply(image, (128, 128), fill=0)
    ys, xs = np.nonzero(padded > 127)
    centre = np.array([[xs.mean() + 0.5, ys.mean() + 0.5, 1, 1, 0]])
    np.testing.assert_allclose(box.boxes_to_original(centre)[0, :2], [150, 50], atol=1.0)


def test_clip_to_image():
    boxes = np.array([[-5.0, 10, 20, 10, 0], [95, 95, 20, 20, 0]])
    clipped = clip_to_image(boxes, 100, 100, rotated=False)
    np.testing.assert_allclose(clipped[0], [2.5, 10, 5, 10, 0])
    np.testing.assert_allclose(clipped[1], [92.5, 92.5, 15, 15, 0])
    rotated = clip_to_image(np.array([[-5.0, 120, 20, 10, 0.3]]), 100, 100, rotated=True)
    np.testing.assert_allclose(rotated[0], [0, 100, 20, 10, 0.3])


def test_device_selection_errors():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_engine_outputs_in_original_pixels(node_checkpoint, vifb_dir):
    import cv2

    engine = FusionEngine(node_checkpoint, device="cpu", score_threshold=0.0, max_detections=30)
    rgb = cv2.cvtColor(cv2.imread(str(vifb_dir / "vis" / "manCar.jpg")), cv2.COLOR_BGR2RGB)
    ir = cv2.imread(str(vifb_dir / "ir" / "manCar.jpg"), cv2.IMREAD_GRAYSCALE)
    result = engine.infer(rgb, ir.astype(np.float32) / 255.0)
    height, width = rgb.shape[:2]
    assert result.fused_luma.shape == (height, width) and result.fused_luma.dtype == np.uint8
    assert result.fused_rgb(rgb).shape == rgb.shape
    det = result.detections
    assert 0 < len(det) <= 30
    x1, x2 = det.boxes[:, 0] - det.boxes[:, 2] / 2, det.boxes[:, 0] + det.boxes[:, 2] / 2
    y1, y2 = det.boxes[:, 1] - det.boxes[:, 3] / 2, det.boxes[:, 1] + det.boxes[:, 3] / 2
    assert x1.min() >= -1e-6 and x2.max() <= width + 1e-6
    assert y1.min() >= -1e-6 and y2.max() <= height + 1e-6
    assert set(det.labels.tolist()) <= {0, 1}
    assert np.all(np.diff(det.scores) <= 1e-6)  # sorted by score
    assert set(result.timings_ms) == {"preprocess", "forward", "postprocess", "fused"}
    lazy = engine.infer(rgb, ir.astype(np.float32) / 255.0)  # the fused image only when asked
    assert "fused" not in lazy.timings_ms
    np.testing.assert_array_equal(lazy.fused_luma, result.fused_luma)
    assert lazy.timings_ms["fused"] > 0


def test_engine_rejects_bad_inputs(node_checkpoint):
    engine = FusionEngine(node_checkpoint, device="cpu", warmup=0)
    rgb = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="thermal: size 64x48 differs from rgb 128x96"):
        engine.infer(rgb, np.zeros((48, 64), np.float32))
    with pytest.raises(ValueError, match="rgb: expected uint8 HxWx3"):
        engine.infer(rgb[..., 0], np.zeros((96, 128), np.float32))
    with pytest.raises(ValueError, match="score_threshold"):
        FusionEngine(node_checkpoint, device="cpu", score_threshold=2.0)
    with pytest.raises(ValueError, match="fp16"):
        FusionEngine(node_checkpoint, device="cpu", fp16=True)


@pytest.mark.parametrize(("width", "height"), [(4096, 1), (1, 4096), (4096, 2)])
def test_letterbox_refuses_images_too_elongated_for_the_input(width, height):
    with pytest.raises(ValueError, match=rf"^size: a {width}x{height} image .* too elongated"):
        Letterbox.fit(width, height, 320, 256)


def test_letterbox_accepts_ordinary_and_tiny_images():
    for size in ((640, 512), (4096, 8), (1, 1), (16, 4096)):
        Letterbox.fit(*size, 320, 256)


def test_class_filter_and_class_agnostic_nms(node_checkpoint):
    from fusion_perception.boxes import box_iou_rotated

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    thermal = rng.random((256, 320), dtype=np.float32)
    kw = {"device": "cpu", "score_threshold": 0.01, "max_detections": 100_000}
    every = FusionEngine(node_checkpoint, **kw).infer(rgb, thermal).detections
    assert set(every.labels.tolist()) == {0, 1}  # the untrained model fires on both classes
    people = FusionEngine(node_checkpoint, classes=["person"], **kw).infer(rgb, thermal)
    # filtered before NMS and the per-level top-k: every person box of the unfiltered run stays
    # (and more may, having no cars to compete with for the top-k)
    assert (people.detections.labels == 0).all()
    kept = {tuple(row) for row in np.round(people.detections.boxes, 2).tolist()}
    unfiltered = {tuple(row) for row in np.round(every.boxes[every.labels == 0], 2).tolist()}
    assert unfiltered <= kept and len(kept) >= len(unfiltered) > 0

    one = FusionEngine(node_checkpoint, agnostic_nms=True, **kw).infer(rgb, thermal).detections
    assert 0 < len(one) < len(every)
    iou = box_iou_rotated(torch.as_tensor(one.boxes), torch.as_tensor(one.boxes)).numpy()
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.5 + 1e-6  # no two kept boxes overlap, whatever their classes
    with pytest.raises(ValueError, match=r"classes: \['dog'\] is not a subset"):
        FusionEngine(node_checkpoint, classes=["person", "dog"], device="cpu")
