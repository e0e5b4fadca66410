"""Paired augmentation: boxes follow the pixels, flips, cross-modal steps, modality dropout, seeding."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import shapely
import torch
from fusion_training.augment import (
    AugmentConfig,
    PairedAugment,
    apply_geometry,
    cross_modal_cutout,
    cross_modal_mix,
    modality_dropout,
    plan_geometry,
)
from fusion_training.datasets import SyntheticDataset, collate
from torch.utils.data import DataLoader, Dataset

W, H = 64, 48


def _corners(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h, a = (float(v) for v in box)
    ex, ey = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    return np.array(
        [
            np.array([cx, cy]) + sx * ex * w / 2 + sy * ey * h / 2
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
    )


def _filled_item(box: tuple[float, ...]) -> dict:
    """Grey noise images with the box filled white in RGB and 1.0 in thermal."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(20, 90, (H, W, 3), dtype=np.uint8)
    thermal = rng.uniform(0.0, 0.3, (H, W)).astype(np.float32)
    # Fill exactly the pixels whose centre (i + 0.5, j + 0.5) lies inside the box.
    cx, cy, w, h, angle = box
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    along = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
    across = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
    mask = (np.abs(along) < w / 2) & (np.abs(across) < h / 2)
    rgb[mask] = 255
    thermal[mask] = 1.0
    return {
        "rgb": rgb,
        "thermal": thermal,
        "boxes": np.array([box], np.float32),
        "labels": np.array([3], np.int64),
        "image_id": "filled",
    }


def _check_box_covers_fill(out: dict, rotated: bool) -> bool:
    """The filled pixels (both modalities) lie in the box, and the box hugs them. False if dropped."""
    rgb_fill = out["rgb"].min(axis=2) > 160
    thermal_fill = out["thermal"] > 0.6
    assert np.mean(rgb_fill != thermal_fill) < 0.01  # both modalities moved identically
    if len(out["boxes"]) == 0:
        return False
    assert out["labels"].tolist() == [3]
    box = out["boxes"][0]
    ys, xs = np.nonzero(rgb_fill)
    assert len(xs) > 0
    polygon = shapely.Polygon(_corners(box))
    centres = shapely.points(xs + 0.5, ys + 0.5)
    assert shapely.contains(polygon.buffer(1.0), centres).all()
    if not rotated:
        assert box[4] == 0
        hug = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        edges = np.array(
            [box[0] - box[2] / 2, box[1] - box[3] / 2, box[0] + box[2] / 2, box[1] + box[3] / 2]
        )
        assert np.abs(hug - edges).max() <= 1.5, (hug, edges)
    else:
        assert polygon.area <= len(xs) + 2.0 * polygon.length + 4.0  # no slack beyond the rim
    return True


@pytest.mark.parametrize("rotated", [False, True])
def test_geometry_keeps_boxes_on_their_pixels(rotated: bool) -> None:
    box = (30.0, 22.0, 26.0, 12.0, 0.5 if rotated else 0.0)
    item = _filled_item(box)
    config = AugmentConfig(
        output_size=(40, 56),
        rotated=rotated,
        crop_probability=0.8,
        crop_scale=(0.3, 1.0),
        min_visible=0.3,
    ).without_photometric()
    augment = PairedAugment(config, seed=1)
    kept = 0
    for _ in range(40):
        out = augment(item)
        assert out["rgb"].shape == (40, 56, 3) and out["thermal"].shape == (40, 56)
        kept += _check_box_covers_fill(out, rotated)
    assert kept >= 15
    stretched = AugmentConfig(
        output_size=(64, 32), rotated=rotated, letterbox=False, crop_probability=0.0
    ).without_photometric()
    assert _check_box_covers_fill(PairedAugment(stretched, seed=0)(item), rotated)


def test_boxes_are_dropped_exactly_when_mostly_cropped_away() -> None:
    item = _filled_item((10.0, 10.0, 12.0, 12.0, 0.0))
    fill = item["rgb"].min(axis=2) > 160
    config = AugmentConfig(
        output_size=(48, 64), crop_probability=1.0, crop_scale=(0.1, 0.4), min_visible=0.5
    ).without_photometric()
    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(60):
        plan = plan_geometry(W, H, config, rng)
        out = apply_geometry(item, plan, config)
        x0, y0, cw, ch = plan.crop
        visible = fill[y0 : y0 + ch, x0 : x0 + cw].sum() / fill.sum()
        kept = len(out["boxes"]) == 1
        outcomes.add(kept)
        if abs(visible - 0.5) > 0.05:  # pixel rounding decides the cases right at the limit
            assert kept == (visible > 0.5), (visible, plan)
    assert outcomes == {True, False}


def test_horizontal_flip_mirrors_centre_and_negates_angle() -> None:
    box = (20.0, 24.0, 30.0, 10.0, 0.3)
    item = _filled_item(box)
    config = AugmentConfig(
        output_size=(H, W), rotated=True, crop_probability=0.0, flip_probability=1.0
    ).without_photometric()
    out = PairedAugment(config, seed=0)(item)
    np.testing.assert_allclose(out["boxes"][0], [W - 20.0, 24.0, 30.0, 10.0, -0.3], atol=1e-4)
    np.testing.assert_array_equal(out["rgb"], item["rgb"][:, ::-1])
    np.testing.assert_array_equal(out["thermal"], item["thermal"][:, ::-1])
    assert _check_box_covers_fill(out, rotated=True)
    horizontal = _filled_item((20.0, 24.0, 30.0, 10.0, 0.0))
    out = PairedAugment(
        AugmentConfig(
            output_size=(H, W), crop_probability=0.0, flip_probability=1.0
        ).without_photometric()
    )(horizontal)
    np.testing.assert_allclose(out["boxes"][0], [W - 20.0, 24.0, 30.0, 10.0, 0.0])


def test_evaluation_letterbox_pads_and_shifts_boxes() -> None:
    item = _filled_item((20.0, 24.0, 30.0, 10.0, 0.0))
    out = PairedAugment(AugmentConfig.evaluation((64, 64)))(item)
    assert out["rgb"].shape == (64, 64, 3)
    assert (
        (out["rgb"][:8] == 0).all()
        and (out["rgb"][56:] == 0).all()
        and (out["thermal"][:8] == 0).all()
    )
    np.testing.assert_array_equal(out["rgb"][8:56], item["rgb"])
    np.testing.assert_allclose(out["boxes"], [[20.0, 32.0, 30.0, 10.0, 0.0]])
    half = PairedAugment(AugmentConfig.evaluation((24, 64)))(item)
    np.testing.assert_allclose(
        half["boxes"], [[16 + 10.0, 12.0, 15.0, 5.0, 0.0]]
    )  # scale 1/2, pad 16


def test_modality_dropout_blanks_exactly_one_modality() -> None:
    item = _filled_item((30.0, 22.0, 26.0, 12.0, 0.0))
    base = AugmentConfig(
        output_size=(H, W),
        crop_probability=0.0,
        flip_probability=0.5,
        cutout_probability=0.0,
        mix_probability=0.0,
    )
    reference = PairedAugment(replace(base, dropout_probability=0.0), seed=9)
    dropping = PairedAugment(replace(base, dropout_probability=1.0), seed=9)
    seen = set()
    for _ in range(20):
        ref, out = reference(item), dropping(item)
        rgb_blank, thermal_blank = not out["rgb"].any(), not out["thermal"].any()
        assert rgb_blank != thermal_blank
        if rgb_blank:
            np.testing.assert_array_equal(out["thermal"], ref["thermal"])
            seen.add("rgb")
        else:
            np.testing.assert_array_equal(out["rgb"], ref["rgb"])
            seen.add("thermal")
        np.testing.assert_array_equal(out["boxes"], ref["boxes"])
    assert seen == {"rgb", "thermal"}
    rng = np.random.default_rng(0)
    copy = {**item, "rgb": item["rgb"].copy(), "thermal": item["thermal"].copy()}
    assert modality_dropout(copy, rng, 1.0, rgb_share=0.0) == "thermal" and copy["rgb"].any()
    assert modality_dropout(copy, rng, 0.0, rgb_share=0.0) is None


def test_cross_modal_cutout_and_mix_change_only_their_regions() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[..., 0] = np.maximum(rgb[..., 1], 1) - 1  # no pixel is grey, so swapped cells are visible
    item = {"rgb": rgb.copy(), "thermal": rng.uniform(0.01, 1, (H, W)).astype(np.float32)}
    original = {"rgb": item["rgb"].copy(), "thermal": item["thermal"].copy()}
    modality = cross_modal_cutout(item, rng, (0.1, 0.2), (0, 0, W, H))
    other = "thermal" if modality == "rgb" else "rgb"
    np.testing.assert_array_equal(item[other], original[other])
    zeroed = (item[modality] == 0) if modality == "thermal" else (item["rgb"] == 0).all(axis=2)
    ys, xs = np.nonzero(zeroed)
    area = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert zeroed.sum() == area and 0.1 * W * H - 2 * (W + H) <= area <= 0.2 * W * H + 2 * (W + H)

    item = {"rgb": original["rgb"].copy(), "thermal": original["thermal"].copy()}
    swapped = cross_modal_mix(item, rng, grid=4, fraction=0.25, region=(0, 8, W, H))
    assert swapped == 4
    grey = (item["rgb"][..., 0] == item["rgb"][..., 1]) & (
        item["rgb"][..., 1] == item["rgb"][..., 2]
    )
    cells = grey[8:].reshape(4, 10, 4, 16).all(axis=(1, 3))
    assert cells.sum() == 4 and not grey[:8].any()
    luma = cv2.cvtColor(original["rgb"], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    np.testing.assert_allclose(item["thermal"][grey], luma[grey])
    np.testing.assert_array_equal(item["thermal"][~grey], original["thermal"][~grey])
    expected_rgb = np.clip(original["thermal"] * 255 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(item["rgb"][grey][:, 0], expected_rgb[grey])


def test_photometric_jitter_stays_in_range_and_keeps_geometry() -> None:
    item = _filled_item((30.0, 22.0, 26.0, 12.0, 0.0))
    config = AugmentConfig(
        output_size=(H, W),
        crop_probability=0.0,
        flip_probability=0.0,
        brightness=0.5,
        contrast=0.5,
        saturation=0.5,
        hue=0.1,
        thermal_noise=0.05,
        cutout_probability=0.0,
        mix_probability=0.0,
        dropout_probability=0.0,
    )
    out = PairedAugment(config, seed=2)(item)
    assert out["rgb"].dtype == np.uint8 and out["thermal"].dtype == np.float32
    assert out["thermal"].min() >= 0.0 and out["thermal"].max() <= 1.0
    assert not np.array_equal(out["rgb"], item["rgb"]) and not np.array_equal(
        out["thermal"], item["thermal"]
    )
    np.testing.assert_array_equal(out["boxes"], item["boxes"])
    assert item["rgb"].max() == 255  # the input item is not modified in place


def test_seeded_runs_repeat_and_seeds_differ() -> None:
    item = _filled_item((30.0, 22.0, 26.0, 12.0, 0.4))
    config = AugmentConfig(
        output_size=(40, 40),
        rotated=True,
        cutout_probability=0.5,
        mix_probability=0.5,
        dropout_probability=0.3,
    )
    a, b, c = (
        PairedAugment(config, seed=4),
        PairedAugment(config, seed=4),
        PairedAugment(config, seed=5),
    )
    outs_a, outs_b, outs_c = ([aug(item) for _ in range(5)] for aug in (a, b, c))
    for x, y in zip(outs_a, outs_b, strict=True):
        assert np.array_equal(x["rgb"], y["rgb"]) and np.array_equal(x["thermal"], y["thermal"])
        assert np.array_equal(x["boxes"], y["boxes"])
    assert any(not np.array_equal(x["rgb"], z["rgb"]) for x, z in zip(outs_a, outs_c, strict=True))


class _SameItem(Dataset):
    """The same item at every index, augmented: equal outputs would mean equal random streams."""

    def __init__(self, augment: PairedAugment) -> None:
        self.item = SyntheticDataset(1, width=48, height=40, seed=1)[0]
        self.augment = augment

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return self.augment(self.item)


def test_dataloader_workers_get_distinct_reproducible_streams() -> None:
    def batches(seed: int) -> list[torch.Tensor]:
        augment = PairedAugment(AugmentConfig(output_size=(32, 32), crop_probability=1.0), seed=0)
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            _SameItem(augment), num_workers=2, collate_fn=collate, generator=generator
        )
        return [batch["rgb"] for batch in loader]

    first, again = batches(7), batches(7)
    assert first[0].shape == (1, 3, 32, 32)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # worker 0 and worker 1, first call each


def test_config_and_item_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="output_size"):
        AugmentConfig(output_size=(0, 32))
    with pytest.raises(ValueError, match="flip_probability"):
        AugmentConfig(output_size=(32, 32), flip_probability=1.5)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(output_size=(32, 32), crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="hue"):
        AugmentConfig(output_size=(32, 32), hue=0.7)
    augment = PairedAugment(AugmentConfig(output_size=(32, 32)))
    item = _filled_item((30.0, 22.0, 26.0, 12.0, 0.4))
    with pytest.raises(ValueError, match="rotated=False"):
        augment(item)
    with pytest.raises(ValueError, match=r"item\['thermal'\]"):
        augment(
            {
                **item,
                "boxes": item["boxes"][:, :5] * [1, 1, 1, 1, 0],
                "thermal": item["thermal"][:10],
            }
        )
    with pytest.raises(ValueError, match=r"item\['rgb'\]"):
        augment({**item, "rgb": item["rgb"].astype(np.float32)})
