"""TSJNet's semantic guidance: the synthetic class maps and their geometry, the segmenter's own
step, the guidance reaching only the fusion path, and the option wired into training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from conftest import few_steps
from fusion_training.augment import AugmentConfig, PairedAugment
from fusion_training.config import TrainingConfigError, load_training_config
from fusion_training.datasets import SyntheticDataset, collate
from fusion_training.losses import UniFusODLoss
from fusion_training.trainer import Trainer
from fusion_training.tsjnet import SemanticGuidanceLoss, TSJNetConfig

from fusion_perception.model import build_model, load_model_config
from fusion_perception.synthetic import SceneGenerator

REPO = Path(__file__).resolve().parents[1]
NANO = REPO / "config" / "training" / "synthetic_nano.yaml"


def test_class_maps_mark_each_object_with_its_class_and_follow_the_geometry():
    scene = SceneGenerator(160, 128, classes=("person", "car"), seed=3, max_objects=4).sample(0)
    assert scene.semantic.shape == (128, 160) and scene.semantic.dtype == np.uint8
    for (cx, cy, w, h, _), label in zip(scene.boxes, scene.labels, strict=True):
        inside = scene.semantic[
            int(cy - h / 2) : int(cy + h / 2), int(cx - w / 2) : int(cx + w / 2)
        ]
        assert (inside == label + 1).mean() > 0.2  # the object's pixels carry its class
    assert (scene.semantic == 0).mean() > 0.5  # mostly background
    item = SyntheticDataset(2, width=160, height=128, classes=("person", "car"), seed=3)[0]
    flipped = PairedAugment(
        AugmentConfig(output_size=(64, 80), crop_probability=0.0, flip_probability=1.0)
    )(item, np.random.default_rng(0))
    expected = item["semantic"][:, ::-1][::2, ::2]  # flip, then half size (nearest)
    assert flipped["semantic"].shape == (64, 80)
    assert (flipped["semantic"] == expected).mean() > 0.95
    assert set(np.unique(flipped["semantic"])) <= set(np.unique(item["semantic"]))


def _batch():
    data = SyntheticDataset(2, width=64, height=64, classes=("person", "car"), seed=1)
    items = [data[0], {k: v for k, v in data[1].items() if k != "semantic"}]  # one real-like
    return collate(items)


def test_the_guidance_trains_the_fusion_path_and_the_segmenter_only_through_its_own_step():
    torch.manual_seed(0)
    model = build_model(load_model_config(REPO / "config" / "models" / "nano.yaml")).train()
    loss_fn = SemanticGuidanceLoss(UniFusODLoss(), TSJNetConfig(enabled=True), 2, "cpu")
    batch = _batch()
    rgb, thermal, targets = batch["rgb"], batch["thermal"], batch["targets"]
    assert "semantic" in targets[0] and "semantic" not in targets[1]
    before = [p.detach().clone() for p in loss_fn.head.parameters()]
    out = model(rgb, thermal)
    loss = loss_fn(model, out, rgb, thermal, targets)
    assert any(
        not torch.equal(a, p) for a, p in zip(before, loss_fn.head.parameters(), strict=True)
    )
    loss_fn.head.zero_grad(set_to_none=True)
    loss.tasks["fusion"].backward()
    assert all(p.grad is None for p in loss_fn.head.parameters())
    assert any(p.grad is not None for p in model.task_parameters("fusion"))
    base = UniFusODLoss()(model, out, rgb, thermal, targets)
    expected = base.terms["fusion"] + loss.terms["tsjnet_guidance"]
    assert loss.terms["fusion"].item() == pytest.approx(expected.item(), rel=1e-5)
    # the segmenter learns the synthetic classes from the fused image
    fused = out["fused"].detach()[:1]
    maps = targets[0]["semantic"][None]
    first = loss_fn.head_step(fused, maps)
    for _ in range(60):
        last = loss_fn.head_step(fused, maps)
    assert last < 0.5 * first
    # a batch without class maps adds nothing
    real = [{k: v for k, v in t.items() if k != "semantic"} for t in targets]
    plain = loss_fn(model, model(rgb, thermal), rgb, thermal, real)
    assert plain.terms["tsjnet_guidance"].item() == 0.0


def test_the_option_trains_from_the_config_with_tardal_and_resumes(tmp_path):
    overrides = few_steps(
        tmp_path / "run",
        **{"tsjnet.enabled": True, "tardal.enabled": True, "tardal.critic_width": 4},
    )
    assert Trainer(load_training_config(NANO, overrides)).fit().step == 2
    state = torch.load(tmp_path / "run" / "last_state.pt", weights_only=False)
    assert state["criterion_kind"] == "SemanticGuidanceLoss > TargetAwareLoss > UniFusODLoss"
    assert {"head", "optimizer", "base"} <= set(state["criterion"])
    header = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0]
    assert "tsjnet_guidance" in header and "tardal_pixel" in header
    more = load_training_config(NANO, {**overrides, "max_steps": 3})
    assert Trainer(more).fit(resume=True).step == 3
    with pytest.raises(TrainingConfigError, match=r"tsjnet\.head_width must be >= 1"):
        load_training_config(NANO, {"tsjnet.head_width": 0})
