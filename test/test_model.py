"""UniFusOD network: config validation, shapes, FRA, heads, losses, gradients and export."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from torch import nn

from fusion_perception.boxes import box_iou_rotated, cxcywh_to_xyxy
from fusion_perception.model import (
    ModelConfig,
    ModelConfigError,
    UniFusOD,
    build_model,
    load_model_config,
)
from fusion_perception.model.backbone import build_backbone
from fusion_perception.model.config import BackboneConfig
from fusion_perception.model.detection_head import DetectionHead
from fusion_perception.model.fra import FineGrainedRegionAttention
from fusion_perception.model.fusion_head import FusionHead

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "models"
CONFIG_NAMES = ["nano", "small", "base", "nano_obb", "small_obb", "base_obb"]
H, W = 64, 96  # small test inputs (multiples of 32)
NUM_LOCATIONS = (8 * 12) + (4 * 6) + (2 * 3)  # strides 8, 16, 32


def tiny_config(**overrides) -> ModelConfig:
    """The nano-sized default config with dotted-key overrides."""
    return ModelConfig().with_overrides(overrides)


def inputs(batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, H, W, generator=g), torch.rand(batch, 1, H, W, generator=g)


def one_box_target(rotated: bool) -> list[dict[str, torch.Tensor]]:
    box = torch.tensor([[52.0, 30.0, 36.0, 20.0, 0.5 if rotated else 0.0]])
    return [{"boxes": box, "labels": torch.tensor([1])}]


def empty_target() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.int64)}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_shipped_configs_load_and_round_trip(name):
    cfg = load_model_config(CONFIG_DIR / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.detection_head.num_classes == 6
    assert cfg.detection_head.rotated == name.endswith("_obb")
    plain = cfg.to_dict()
    assert ModelConfig.from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg


def test_config_sizes_are_ordered_and_nano_is_small():
    counts = {}
    for name in ("nano", "small", "base"):
        model = build_model(load_model_config(CONFIG_DIR / f"{name}.yaml"))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert counts["nano"] < 500_000
    assert counts["nano"] < counts["small"] < counts["base"]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"fra": {"num_region": 8}}, "fra.num_region"),
        ({"head": {}}, "head"),
        ({"neck": {"channels": "32"}}, "neck.channels"),
        ({"neck": {"channels": True}}, "neck.channels"),
        ({"fra": {"num_regions": 0}}, "fra.num_regions"),
        ({"fra": {"kernel_sizes": [3, 4, 7]}}, "fra.kernel_sizes"),
        ({"fra": {"dilations": [1, 2]}}, "fra.dilations"),
        ({"fra": {"variant": "grouped"}}, "fra.variant"),
        ({"fra": {"variant": "channel_group"}, "neck": {"channels": 36}}, "neck.channels"),
        ({"detection_head": {"strides": [8, 64]}}, "detection_head.strides"),
        ({"detection_head": {"strides": [16, 8]}}, "detection_head.strides"),
        ({"detection_head": {"num_classes": 0}}, "detection_head.num_classes"),
        ({"backbone": {"name": "vgg16"}}, "backbone.name"),
        ({"backbone": {"name": "resnet18", "width_multiplier": 0.5}}, "backbone.width_multiplier"),
        ({"backbone": {"channels": [16, 24]}}, "backbone.channels"),
        ({"fusion_head": {"output_bound": "relu"}}, "fusion_head.output_bound"),
        ({"detection_head": {"scale_ranges": [0, 64, 64]}}, "detection_head.scale_ranges"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ModelConfigError, match=key.replace(".", r"\.")):
        ModelConfig.from_dict(data)


def test_config_coerces_ints_for_floats_and_applies_overrides():
    cfg = ModelConfig.from_dict({"backbone": {"expansion": 3}})
    assert isinstance(cfg.backbone.expansion, float) and cfg.backbone.expansion == 3.0
    changed = cfg.with_overrides({"detection_head.num_classes": 3})
    assert changed.detection_head.num_classes == 3 and cfg.detection_head.num_classes == 6
    with pytest.raises(ModelConfigError, match=r"detection_head\.classes"):
        cfg.with_overrides({"detection_head.classes": 3})
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_model_config(CONFIG_DIR / "missing.yaml")


def test_default_scale_ranges_cover_all_sizes():
    ranges = ModelConfig().detection_head.level_ranges()
    assert ranges == ((0.0, 64.0), (64.0, 128.0), (128.0, math.inf))


# ---------------------------------------------------------------- shapes and API


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_forward_shapes_for_every_config(name):
    cfg = load_model_config(CONFIG_DIR / f"{name}.yaml")
    model = build_model(cfg).eval()
    rgb, thermal = inputs(batch=2)
    with torch.no_grad():
        out = model(rgb, thermal)
    assert out["fused"].shape == (2, 1, H, W)
    assert out["fused"].min() >= 0.0 and out["fused"].max() <= 1.0
    assert out["cls_logits"].shape == (2, NUM_LOCATIONS, 6)
    assert out["bbox_reg"].shape == (2, NUM_LOCATIONS, 4)
    assert out["ctrness"].shape == (2, NUM_LOCATIONS)
    assert out["boxes"].shape == (2, NUM_LOCATIONS, 5)
    assert ("angle" in out) == cfg.detection_head.rotated
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"]
)
def test_torchvision_backbones_give_four_strided_levels(name):
    backbone = build_backbone(BackboneConfig(name=name)).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, H, W))
    assert [f.shape[-2:] for f in features] == [(H // s, W // s) for s in (4, 8, 16, 32)]
    assert tuple(f.shape[1] for f in features) == backbone.out_channels


def test_backbone_weights_come_only_from_a_user_file(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone(BackboneConfig(name="mobilenet_v3_small", weights=str(path)))
    assert torch.equal(backbone.blocks[0][0].weight, reference.features[0][0].weight)

    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"backbone\.weights"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "bad.pth")))
    with pytest.raises(FileNotFoundError, match=r"backbone\.weights"):
        build_backbone(BackboneConfig(name="own", weights=str(tmp_path / "none.pth")))


@pytest.mark.parametrize(
    "overrides",
    [
        {"neck.top_down": False, "detection_head.num_convs": 0},
        {"fra.variant": "channel_group", "fra.dilations": [1, 2, 3]},
        {"detection_head.box_loss": "giou"},
        {"detection_head.box_loss": "giou", "detection_head.rotated": True},
        {"detection_head.strides": [4, 8, 16], "fusion_head.image_skip": False},
        {"detection_head.strides": [16, 32], "detection_head.scale_ranges": [0, 96, 96, 1e9]},
        {"backbone.name": "mobilenet_v3_small", "backbone.width_multiplier": 0.5},
    ],
)
def test_config_variants_train_end_to_end(overrides):
    torch.manual_seed(7)
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    out = model(*inputs())
    num_locations = sum((H // s) * (W // s) for s in cfg.detection_head.strides)
    assert out["cls_logits"].shape == (1, num_locations, 6)
    losses = model.detection_loss(out, one_box_target(cfg.detection_head.rotated))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    (sum(losses.values()) + out["fused"].mean()).backward()
    assert all(p.grad is not None for p in model.shared_parameters())


def test_bad_inputs_raise_clear_errors():
    model = build_model(tiny_config()).eval()
    rgb, thermal = inputs()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(rgb[..., :70], thermal[..., :70])
    with pytest.raises(ValueError, match="thermal"):
        model(rgb, rgb)
    with pytest.raises(ValueError, match="share B, H and W"):
        model(rgb, thermal[..., :32])
    with pytest.raises(ValueError, match="task"):
        model.task_parameters("segmentation")
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model({"name": "nano"})


def test_parameter_groups_partition_the_model():
    model = build_model(tiny_config())
    shared = {id(p) for p in model.shared_parameters()}
    fusion = {id(p) for p in model.task_parameters("fusion")}
    detection = {id(p) for p in model.task_parameters("detection")}
    assert not (shared & fusion) and not (shared & detection) and not (fusion & detection)
    assert shared | fusion | detection == {id(p) for p in model.parameters()}


def test_both_task_losses_reach_the_shared_parameters():
    torch.manual_seed(0)
    model = build_model(tiny_config(**{"detection_head.rotated": True}))
    rgb, thermal = inputs()
    out = model(rgb, thermal)
    fusion_loss = (out["fused"] - thermal).abs().mean()
    detection_loss = sum(model.detection_loss(out, one_box_target(rotated=True)).values())
    shared = model.shared_parameters()
    for loss, own, other in (
        (fusion_loss, "fusion", "detection"),
        (detection_loss, "detection", "fusion"),
    ):
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads)
        norms = {id(p): g.norm() for p, g in zip(shared, grads, strict=True)}
        for part in (model.backbone, model.neck, model.fra):
            assert sum(norms[id(p)] for p in part.parameters()) > 0
        own_grads = torch.autograd.grad(
            loss, model.task_parameters(own), retain_graph=True, allow_unused=True
        )
        assert any(g is not None and g.abs().sum() > 0 for g in own_grads)
        other_grads = torch.autograd.grad(
            loss, model.task_parameters(other), retain_graph=True, allow_unused=True
        )
        assert all(g is None for g in other_grads)


# ---------------------------------------------------------------- FRA


@pytest.mark.parametrize("variant", ["literal", "channel_group"])
def test_fra_weights_masks_and_reweighting(variant):
    torch.manual_seed(1)
    fra = FineGrainedRegionAttention(16, (3, 5, 7), (1, 2, 3), num_regions=8, variant=variant)
    fra.eval()
    z = torch.randn(2, 16, 12, 10)
    with torch.no_grad():
        weights, masks = fra.attention(z)
        out = fra(z)
    assert weights.shape == (2, 3, 8) and masks.shape == (2, 8, 12, 10)
    assert torch.allclose(weights.sum(dim=2), torch.ones(2, 3))
    assert (weights > 0).all()
    assert (masks > 0).all() and (masks < 1).all()
    assert out.shape == z.shape
    if variant == "literal":
        expected = z * masks.mean(dim=1, keepdim=True)
    else:
        expected = (z.view(2, 8, 2, 12, 10) * masks[:, :, None]).view_as(z)
    assert torch.allclose(out, expected, atol=1e-6)


def test_fra_literal_gain_without_normalisation_is_the_mask_sum():
    torch.manual_seed(2)
    fra = FineGrainedRegionAttention(8, num_regions=4, normalize_gain=False).eval()
    z = torch.rand(1, 8, 6, 6) + 0.1
    with torch.no_grad():
        _, masks = fra.attention(z)
        gain = fra(z) / z
    assert torch.allclose(gain, masks.sum(dim=1, keepdim=True).expand_as(z), atol=1e-5)
    # ReLU operators make the aggregated maps >= 0, so each mask is >= 0.5 (paper form)
    assert gain.min() >= 4 * 0.5 - 1e-5 and gain.max() < 4


def test_fra_switched_off_is_the_plain_path():
    torch.manual_seed(4)
    with_fra = build_model(tiny_config()).eval()
    without = build_model(tiny_config(**{"fra.enabled": False})).eval()
    assert all(isinstance(m, nn.Identity) for m in without.fra)
    missing, unexpected = without.load_state_dict(with_fra.state_dict(), strict=False)
    assert not missing and all(key.startswith("fra.") for key in unexpected)
    with_fra.fra = nn.ModuleList(nn.Identity() for _ in with_fra.fra)
    rgb, thermal = inputs()
    with torch.no_grad():
        a, b = with_fra(rgb, thermal), without(rgb, thermal)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- fusion head


def test_fusion_head_projects_before_upsampling_exactly():
    torch.manual_seed(5)
    head = FusionHead(16, 8, image_skip=True, output_bound="sigmoid").eval()
    nn.init.normal_(head.bias)
    levels = [torch.randn(1, 16, H // s, W // s) for s in (8, 16, 32)]
    luminance, thermal = torch.rand(1, 1, H, W), torch.rand(1, 1, H, W)
    upsampled = sum(
        F.interpolate(level, size=(H, W), mode="bilinear", align_corners=False) for level in levels
    )
    reduced = F.conv2d(upsampled, head.project.weight, head.bias)  # paper order
    expected = torch.sigmoid(head.reconstruct(torch.cat((reduced, luminance, thermal), dim=1)))
    with torch.no_grad():
        assert torch.allclose(head(levels, luminance, thermal), expected, atol=1e-5)


def test_fusion_output_clamp_bound():
    model = build_model(tiny_config(**{"fusion_head.output_bound": "clamp"})).eval()
    with torch.no_grad():
        fused = model(*inputs())["fused"]
    assert fused.min() >= 0.0 and fused.max() <= 1.0


# ---------------------------------------------------------------- detection head


def test_assignment_of_horizontal_and_rotated_boxes():
    head = DetectionHead(ModelConfig().detection_head, 32)
    sizes = head.level_sizes((H, W))
    points, strides = head.locations(sizes, torch.device("cpu"), torch.float32)
    ranges = head._location_ranges(sizes, points)

    horizontal = torch.tensor([[32.0, 32.0, 20.0, 12.0, 0.0]])
    matched = head._assign(horizontal, points, strides, ranges)
    positives = points[matched == 0]
    assert sorted(map(tuple, positives.tolist())) == [(28, 28), (28, 36), (36, 28), (36, 36)]
    assert (strides[matched == 0] == 8).all()

    thin = torch.tensor([[32.0, 32.0, 40.0, 6.0, math.pi / 4]])  # along the main diagonal
    positives = points[head._assign(thin, points, strides, ranges) == 0].tolist()
    assert [28.0, 28.0] in positives and [36.0, 36.0] in positives
    assert [28.0, 36.0] not in positives  # inside the enclosing box, outside the rotated one

    nested = torch.tensor([[32.0, 32.0, 40.0, 40.0, 0.0], [32.0, 32.0, 20.0, 20.0, 0.0]])
    matched = head._assign(nested, points, strides, ranges)
    at_centre = ((points - 32).abs() < 8).all(dim=1) & (strides == 8)
    assert (matched[at_centre] == 1).all()  # shared locations go to the smaller box

    assert (head._assign(torch.zeros(0, 5), points, strides, ranges) == -1).all()


def test_box_without_regular_positive_keeps_nearest_inside_location():
    cfg = ModelConfig().with_overrides({"detection_head.center_sampling_radius": 0.1})
    head = DetectionHead(cfg.detection_head, 32)
    sizes = head.level_sizes((H, W))
    points, strides = head.locations(sizes, torch.device("cpu"), torch.float32)
    ranges = head._location_ranges(sizes, points)
    matched = head._assign(torch.tensor([[30.0, 30.0, 10.0, 10.0, 0.0]]), points, strides, ranges)
    assert points[matched == 0].tolist() == [[28.0, 28.0]]


@pytest.mark.parametrize("gt_angle", [1.55, -1.55, 0.3, 1.55 - math.pi])
@pytest.mark.parametrize("predicted_shift", [0.0, math.pi, -0.04, 0.04])
def test_rotated_regression_targets_decode_back_to_the_box(gt_angle, predicted_shift):
    # 1.55 + 0.04 wraps to about -1.55 when decoded: the targets must follow the predicted
    # frame, otherwise decoding would mirror the centre about the location (~9 px off here).
    cfg = ModelConfig.from_dict({"detection_head": {"rotated": True}})
    head = DetectionHead(cfg.detection_head, 32)
    gt = torch.tensor([[40.0, 30.0, 30.0, 12.0, gt_angle]], dtype=torch.float64)
    point = torch.tensor([[44.0, 28.0]], dtype=torch.float64)
    predicted = gt_angle + predicted_shift
    angle = torch.tensor([[math.sin(2 * predicted), math.cos(2 * predicted)]], dtype=torch.float64)
    ltrb = head.regression_targets(point, gt, angle)
    assert (ltrb > 0).all()
    stride = torch.tensor([8.0], dtype=torch.float64)
    decoded = head.decode((ltrb / 8.0)[None], angle[None], point, stride)[0]
    assert torch.allclose(decoded[:, 2:4], gt[:, 2:4], atol=1e-9)
    tolerance = 1e-9 if predicted_shift in (0.0, math.pi) else 0.5
    assert (decoded[:, :2] - gt[:, :2]).abs().max() < tolerance


@pytest.mark.parametrize("rotated", [False, True])
def test_box_losses_are_exactly_zero_without_objects(rotated):
    model = build_model(tiny_config(**{"detection_head.rotated": rotated}))
    out = model(*inputs())
    losses = model.detection_loss(out, [empty_target()])
    expected = {"classification", "bbox_regression", "bbox_ctrness"}
    assert set(losses) == (expected | {"bbox_angle"} if rotated else expected)
    assert losses["classification"] > 0 and torch.isfinite(losses["classification"])
    for name in expected - {"classification"} | ({"bbox_angle"} if rotated else set()):
        assert losses[name].item() == 0.0
    sum(losses.values()).backward()  # an empty image still gives a usable graph

    out = model(*inputs(batch=2))
    mixed = model.detection_loss(out, [empty_target(), one_box_target(rotated)[0]])
    assert all(torch.isfinite(v) and v > 0 for v in mixed.values())


def test_detection_targets_are_validated():
    model = build_model(tiny_config())
    out = model(*inputs())
    bad_label = [
        {"boxes": torch.tensor([[10.0, 10.0, 5.0, 5.0, 0.0]]), "labels": torch.tensor([6])}
    ]
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        model.detection_loss(out, bad_label)
    angled = one_box_target(rotated=True)
    with pytest.raises(ValueError, match="non-zero angle"):
        model.detection_loss(out, angled)
    with pytest.raises(ValueError, match="list of 1"):
        model.detection_loss(out, [empty_target(), empty_target()])
    flat = [{"boxes": torch.tensor([[10.0, 10.0, 0.0, 5.0, 0.0]]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="w or h <= 0"):
        model.detection_loss(out, flat)


@pytest.mark.parametrize("rotated", [False, True])
def test_training_on_one_image_reduces_the_loss_and_finds_the_box(rotated):
    torch.manual_seed(0)
    model = build_model(tiny_config(**{"detection_head.rotated": rotated}))
    rgb, thermal = inputs()
    targets = one_box_target(rotated)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        losses = model.detection_loss(model(rgb, thermal), targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]

    model.eval()
    with torch.no_grad():
        detections = model.postprocess(model(rgb, thermal), score_threshold=0.05)[0]
    assert detections["labels"][0] == 1
    iou = box_iou_rotated(detections["boxes"][:1], targets[0]["boxes"])
    assert iou.item() > 0.5


def test_postprocess_output_contract():
    torch.manual_seed(6)
    model = build_model(tiny_config()).eval()
    with torch.no_grad():
        out = model(*inputs(batch=2))
    results = model.postprocess(out, score_threshold=0.0, nms_threshold=0.9, max_detections=7)
    assert len(results) == 2
    for result in results:
        assert set(result) == {"boxes", "scores", "labels"}
        assert result["boxes"].shape == (7, 5) and result["labels"].dtype == torch.int64
        assert torch.all(result["scores"][:-1] >= result["scores"][1:])
        assert (result["boxes"][:, 4] == 0).all()
        xyxy = cxcywh_to_xyxy(result["boxes"][:, :4])
        assert xyxy.min() >= 0 and (xyxy[:, 2] <= W).all() and (xyxy[:, 3] <= H).all()
    assert model.postprocess(out, score_threshold=1.0)[0]["boxes"].shape == (0, 5)
    with pytest.raises(ValueError, match="score_threshold"):
        model.postprocess(out, score_threshold=2.0)


def test_postprocess_keeps_the_best_pre_nms_top_k_of_each_level():
    torch.manual_seed(7)
    model = build_model(tiny_config()).eval()
    head = model.detection_head
    with torch.no_grad():
        out = model(*inputs(batch=1))
    sizes = head.level_sizes((H, W))
    scores = torch.sqrt(torch.sigmoid(out["cls_logits"]) * torch.sigmoid(out["ctrness"])[..., None])
    flat, start, expected = scores[0].flatten(), 0, []
    head.pre_nms_top_k = 5
    for h, w in sizes:  # the reference: each level's 5 best scores
        level = flat[start : start + h * w * head.num_classes]
        expected.append(level.topk(5).values)
        start += h * w * head.num_classes
    # no suppression, room for all: every kept location comes back
    result = model.postprocess(out, score_threshold=0.0, nms_threshold=1.0, max_detections=10_000)
    assert len(sizes) > 1 and len(result[0]["scores"]) == 5 * len(sizes)
    kept = torch.sort(result[0]["scores"]).values
    assert torch.allclose(kept, torch.sort(torch.cat(expected)).values)
    head.pre_nms_top_k = 10_000  # under the cap: everything above the threshold
    result = model.postprocess(out, score_threshold=0.0, nms_threshold=1.0, max_detections=10_000)
    assert len(result[0]["scores"]) == flat.numel()


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("name", ["nano", "nano_obb"])
def test_traced_forward_matches_eager(name):
    model = build_model(load_model_config(CONFIG_DIR / f"{name}.yaml")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer deprecation/shape notices from torch itself
        traced = torch.jit.trace(model, inputs(seed=1), strict=False)
    rgb, thermal = inputs(seed=2)  # different data than the trace example
    with torch.no_grad():
        eager, replay = model(rgb, thermal), traced(rgb, thermal)
    assert set(eager) == set(replay)
    for key in eager:
        assert torch.allclose(eager[key], replay[key], atol=1e-5), key


def test_onnx_export_passes_the_checker(tmp_path):
    import onnx

    model: UniFusOD = build_model(load_model_config(CONFIG_DIR / "nano_obb.yaml")).eval()
    path = tmp_path / "unifusod.onnx"
    names = ["fused", "cls_logits", "bbox_reg", "ctrness", "angle", "boxes"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs(),
            str(path),
            dynamo=False,  # the TorchScript exporter; the dynamo one needs onnxscript
            input_names=["rgb", "thermal"],
            output_names=names,
            opset_version=17,
        )
    exported = onnx.load(str(path))
    onnx.checker.check_model(exported)
    assert [o.name for o in exported.graph.output] == names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_model_runs_on_cuda():
    model = build_model(tiny_config(**{"detection_head.rotated": True})).cuda()
    rgb, thermal = (x.cuda() for x in inputs())
    out = model(rgb, thermal)
    losses = model.detection_loss(out, [{k: v.cuda() for k, v in one_box_target(True)[0].items()}])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        detections = model.postprocess(model(rgb, thermal), score_threshold=0.0)[0]
    assert detections["boxes"].device.type == "cuda"
