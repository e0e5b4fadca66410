"""The real-imagery model parts: ImageNet EfficientNet-Lite0, pyramid fusion at native resolution,
fusion-only (unlabelled) images in the detection loss."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fusion_perception.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from fusion_perception.engine import FusionEngine
from fusion_perception.model.config import ModelConfig, ModelConfigError, load_model_config
from fusion_perception.model.efficientnet_lite import (
    EfficientNetLite0,
    imagenet_weights_path,
    load_imagenet_weights,
)
from fusion_perception.model.pyramid_fusion import fuse_pyramid, levels_for_size
from fusion_perception.model.unifusod import build_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FUSION_SHARED_DATA", REPO.parent / "shared" / "data"))
M3FD = SHARED / "realfmt" / "m3fd"
LITE0 = REPO / "config" / "models" / "lite0.yaml"
# ImageNet-1k classes that are road vehicles (cars, vans, trucks, their parts).
VEHICLES = {407, 436, 468, 511, 569, 609, 627, 656, 661, 675, 705, 717, 734, 751, 817, 864, 867}


def _lite0_config(**fusion_head) -> ModelConfig:
    cfg = load_model_config(LITE0)
    return replace(cfg, fusion_head=replace(cfg.fusion_head, **fusion_head))


@pytest.fixture(scope="module")
def imagenet_lite0() -> EfficientNetLite0:
    model = EfficientNetLite0()
    load_imagenet_weights(model)
    return model.eval()


def test_imagenet_classifier_sees_a_car_in_a_real_car_crop(imagenet_lite0):
    if not (M3FD / "Vis_00471.png").is_file():
        pytest.skip(f"real M3FD sample not found in {M3FD} (set FUSION_SHARED_DATA)")
    boxes = json.loads((M3FD / "coco_excerpt_00390.json").read_text())["annotations"]
    cars = [a["bbox"] for a in boxes if a["category_id"] == 2]  # M3FD category 2 = Car
    rgb = cv2.imread(str(M3FD / "Vis_00471.png"))[..., ::-1]
    x, y, w, h = cars[0]
    crop = cv2.resize(np.ascontiguousarray(rgb[y : y + h, x : x + w]), (224, 224))
    tensor = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
    cfg = load_model_config(LITE0).backbone
    mean = torch.tensor(cfg.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.input_std).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = imagenet_lite0((tensor - mean) / std).topk(5).indices[0].tolist()
    assert VEHICLES & set(top5), f"no vehicle class in the top 5 {top5}"
    # an untrained network of the same architecture does not know cars
    with torch.no_grad():
        torch.manual_seed(0)
        untrained = EfficientNetLite0().eval()((tensor - mean) / std).softmax(1).max()
        trained = imagenet_lite0((tensor - mean) / std).softmax(1).max()
    assert trained > 5 * untrained


def test_key_mapping_fails_loudly_on_missing_extra_or_misshaped_tensors(tmp_path):
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    cases = {
        "missing": {k: v for k, v in state.items() if k != "_blocks.3._project_conv.weight"},
        "extra": {**state, "_blocks.16._depthwise_conv.weight": torch.zeros(1)},
        "misshaped": {**state, "_fc.weight": torch.zeros(10, 1280)},
    }
    for name, broken in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(broken, path)
        with pytest.raises(ValueError) as error:
            load_imagenet_weights(EfficientNetLite0(), path)
        message = str(error.value)
        assert {
            "missing": "_blocks.3._project_conv.weight",
            "extra": "_blocks.16",
            "misshaped": "_fc.weight",
        }[name] in message


def test_backbone_loads_imagenet_and_checkpoint_is_self_contained(tmp_path, imagenet_lite0):
    cfg = _lite0_config()
    model = build_model(cfg)
    stem = model.backbone.blocks[0][0].weight
    assert torch.equal(stem, imagenet_lite0.stem[0].weight)
    assert model.backbone.out_channels == (40, 112, 320)
    ckpt = new_checkpoint(model, cfg, ["person", "car"], (320, 256))
    path = tmp_path / "lite0.pt"
    save_checkpoint(ckpt, path)
    loaded = load_checkpoint(path)
    assert loaded.model_config.backbone.weights is None
    assert loaded.provenance["backbone_initial_weights"] == "imagenet"
    rebuilt = loaded.build_model("cpu")
    assert torch.equal(rebuilt.backbone.blocks[0][0].weight, stem)


def test_imagenet_weights_only_for_lite0():
    with pytest.raises(ModelConfigError, match=r"backbone\.weights"):
        ModelConfig.from_dict({"backbone": {"name": "resnet18", "weights": "imagenet"}})


def test_pyramid_reconstructs_identical_sources_and_blends_flat_ones():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 96, 128)
    for w in (0.0, 0.3, 1.0):
        fused = fuse_pyramid(torch.full((1, 1, 12, 16), w), image, image.clone(), levels=5)
        assert torch.allclose(fused, image, atol=1e-5)
    dark, warm = torch.full((1, 1, 64, 64), 0.2), torch.full((1, 1, 64, 64), 0.8)
    assert torch.allclose(fuse_pyramid(torch.ones(1, 1, 8, 8), dark, warm, 4), warm)
    assert torch.allclose(fuse_pyramid(torch.zeros(1, 1, 8, 8), dark, warm, 4), dark)


def test_pyramid_keeps_the_stronger_detail_of_each_source_and_passes_gradients():
    rows = torch.arange(128.0).view(1, 1, 128, 1).expand(1, 1, 128, 128)
    stripes = 0.5 + 0.3 * torch.sign(torch.sin(rows))  # fine texture, visible only
    left = torch.zeros(1, 1, 128, 128)
    left[..., :64] = 0.6  # a large warm region, thermal only
    weight = torch.full((1, 1, 16, 16), 0.5, requires_grad=True)
    fused = fuse_pyramid(weight, stripes, left, levels=5)
    detail = (fused[..., 1:, :] - fused[..., :-1, :]).abs().mean()
    source = (stripes[..., 1:, :] - stripes[..., :-1, :]).abs().mean()
    assert detail > 0.8 * source  # an average would halve it
    assert fused[..., :64].mean() > fused[..., 64:].mean() + 0.1  # the warm half stays brighter
    fused.mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_levels_follow_the_source_resolution():
    assert levels_for_size(5, (256, 320), (256, 320)) == 5
    assert levels_for_size(5, (1024, 1280), (256, 320)) == 7
    assert levels_for_size(5, (128, 160), (256, 320)) == 4


def test_engine_fuses_at_the_cameras_resolution_with_their_detail(tmp_path, vifb_dir):
    name = sorted(p.stem for p in (vifb_dir / "vis").glob("*.jpg"))[0]
    rgb = cv2.imread(str(vifb_dir / "vis" / f"{name}.jpg"))[..., ::-1]
    ir = cv2.imread(str(vifb_dir / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    rgb = np.ascontiguousarray(cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    ir = cv2.resize(ir, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    sharpness = {}
    for output in ("weights", "image"):
        cfg = replace(
            _lite0_config(output=output), backbone=replace(_lite0_config().backbone, weights=None)
        )
        cfg = cfg.with_overrides({"detection_head.num_classes": 2})
        torch.manual_seed(0)
        ckpt = new_checkpoint(build_model(cfg), cfg, ["person", "car"], (160, 128))
        result = FusionEngine(ckpt, device="cpu", warmup=0).infer(rgb, ir)
        assert result.fused_luma.shape == rgb.shape[:2]
        fused = result.fused_luma.astype(np.float32)
        sharpness[output] = np.abs(np.diff(fused, axis=1)).mean()
    visible = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    assert sharpness["weights"] > 0.7 * np.abs(np.diff(visible, axis=1)).mean()
    assert sharpness["weights"] > 2 * sharpness["image"]


def test_unlabelled_images_add_nothing_to_the_detection_loss():
    cfg = ModelConfig.from_dict(
        {"name": "t", "detection_head": {"num_classes": 2}, "fusion_head": {"output": "weights"}}
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    out = model(torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64))
    box = {"boxes": torch.tensor([[32.0, 32.0, 20.0, 30.0, 0.0]]), "labels": torch.tensor([1])}
    none = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.int64)}
    unlabelled = {**none, "labelled": torch.tensor(False)}
    first_only = {k: v[:1] for k, v in out.items()}
    reference = model.detection_loss(first_only, [box])
    masked = model.detection_loss(out, [box, unlabelled])
    negative = model.detection_loss(out, [box, none])
    for term, value in reference.items():
        assert masked[term].item() == pytest.approx(value.item(), rel=1e-5)
    assert negative["classification"] > masked["classification"]
    assert set(out) >= {"fused", "fusion_weight"}
