"""TarDAL's target-aware terms: histogram saliency, the bounded saliency weights, the WGAN-div
critics (their gradients only through their own step) and the option wired into training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from conftest import few_steps
from fusion_training.config import TrainingConfigError, load_training_config
from fusion_training.losses import UniFusODLoss
from fusion_training.tardal import (
    Critic,
    TarDALConfig,
    TargetAwareLoss,
    critic_loss,
    histogram_saliency,
    saliency_pixel_loss,
    target_masks,
)
from fusion_training.trainer import Trainer

from fusion_perception.model import build_model, load_model_config

REPO = Path(__file__).resolve().parents[1]
NANO = REPO / "config" / "training" / "synthetic_nano.yaml"


def test_histogram_saliency_is_the_mean_grey_distance_to_every_pixel():
    # three pixels at 0 and one at 255: S(0) = 255 / 4, S(255) = 3 * 255 / 4
    image = torch.tensor([[0.0, 0.0], [0.0, 1.0]])[None, None]
    saliency = histogram_saliency(image)
    assert saliency[0, 0, 0, 0].item() == pytest.approx(255 / 4)
    assert saliency[0, 0, 1, 1].item() == pytest.approx(3 * 255 / 4)
    flat = histogram_saliency(torch.full((1, 1, 4, 4), 0.3))
    assert torch.count_nonzero(flat) == 0  # nothing stands out of a flat image


def test_saliency_weights_follow_the_source_whose_pixel_stands_out():
    """A warm person (bright in thermal only) on a flat background: the thermal weight there is
    ~1, so copying thermal costs nothing there and copying visible costs the whole contrast."""
    thermal = torch.full((1, 1, 16, 16), 0.2)
    thermal[..., 6:10, 6:10] = 0.9
    visible = torch.full((1, 1, 16, 16), 0.5) + 0.01 * torch.rand(1, 1, 16, 16)
    as_thermal = saliency_pixel_loss(thermal, visible, thermal)
    as_visible = saliency_pixel_loss(visible, visible, thermal)
    assert as_thermal < as_visible
    s_ir, s_vis = histogram_saliency(thermal), histogram_saliency(visible)
    w_ir = s_ir / (s_ir + s_vis)
    assert w_ir[..., 8, 8].item() > 0.9 and w_ir.min() >= 0.0 and w_ir.max() <= 1.0


def test_target_masks_cover_the_labelled_boxes_only():
    boxes = torch.tensor([[8.0, 6.0, 4.0, 2.0, 0.0]])  # cx, cy, w, h, angle
    targets = [
        {"boxes": boxes, "labelled": torch.tensor(True)},
        {"boxes": boxes, "labelled": torch.tensor(False)},  # fusion-only image: no targets
        {"boxes": torch.zeros(0, 5), "labelled": torch.tensor(True)},
    ]
    masks = target_masks(targets, 12, 16)
    assert masks.shape == (3, 1, 12, 16)
    assert masks[0].sum().item() == 4 * 2 and masks[0, 0, 5:7, 6:10].all()
    assert masks[1:].sum().item() == 0


def test_the_critic_learns_to_tell_real_from_fake_and_its_penalty_is_wgan_div():
    torch.manual_seed(0)
    critic = Critic(width=4)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.999))
    real = torch.rand(8, 1, 32, 32) * 0.2 + 0.8  # bright targets
    fake = torch.rand(8, 1, 32, 32) * 0.2  # a fused image that lost them
    for _ in range(60):
        optimizer.zero_grad()
        critic_loss(critic, real, fake, k=2.0, p=6.0).backward()
        optimizer.step()
    assert critic(real).mean() > critic(fake).mean() + 0.1
    # with k = 0 the loss is exactly the Wasserstein estimate
    plain = critic_loss(critic, real, fake, k=0.0, p=6.0)
    assert plain.item() == pytest.approx((-critic(real).mean() + critic(fake).mean()).item())


def _batch(size: int = 64):
    torch.manual_seed(1)
    rgb = torch.rand(2, 3, size, size)
    thermal = torch.rand(2, 1, size, size)
    boxes = torch.tensor([[20.0, 20.0, 12.0, 16.0, 0.0]])
    targets = [
        {"boxes": boxes, "labels": torch.tensor([0]), "labelled": torch.tensor(True)}
        for _ in range(2)
    ]
    return rgb, thermal, targets


def test_gradients_reach_the_critics_only_through_their_own_step():
    model = build_model(load_model_config(REPO / "config" / "models" / "nano.yaml")).train()
    loss_fn = TargetAwareLoss(UniFusODLoss(), TarDALConfig(enabled=True, critic_width=4), "cpu")
    rgb, thermal, targets = _batch()
    before = [p.detach().clone() for c in loss_fn.critics() for p in c.parameters()]
    out = model(rgb, thermal)
    loss = loss_fn(model, out, rgb, thermal, targets)
    after = [p.detach().clone() for c in loss_fn.critics() for p in c.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # they stepped
    for critic in loss_fn.critics():
        critic.zero_grad(set_to_none=True)
    loss.tasks["fusion"].backward()
    for critic in loss_fn.critics():
        assert all(p.grad is None for p in critic.parameters())  # the generator's pass: none
        assert all(p.requires_grad for p in critic.parameters())  # unfrozen again
    fused_head = [p for p in model.task_parameters("fusion") if p.grad is not None]
    assert fused_head, "the fusion head gets the TarDAL terms' gradient"
    assert {"tardal_pixel", "tardal_adversarial", "tardal_critic"} <= set(loss.terms)
    base = UniFusODLoss()(model, out, rgb, thermal, targets)
    extra = 20.0 * loss.terms["tardal_pixel"] + 0.1 * loss.terms["tardal_adversarial"]
    expected = base.terms["fusion"] + extra
    assert loss.terms["fusion"].item() == pytest.approx(expected.item(), rel=1e-5)
    model.eval()
    with torch.no_grad():  # evaluation: the critics never step
        loss_fn(model, model(rgb, thermal), rgb, thermal, targets)
    assert all(
        torch.equal(a, p)
        for a, p in zip(after, (p for c in loss_fn.critics() for p in c.parameters()), strict=True)
    )


def test_the_option_trains_from_the_config_resumes_and_is_checked(tmp_path):
    overrides = few_steps(tmp_path / "run", **{"tardal.enabled": True, "tardal.critic_width": 4})
    config = load_training_config(NANO, overrides)
    result = Trainer(config).fit()
    assert result.step == 2
    state = torch.load(tmp_path / "run" / "last_state.pt", weights_only=False)
    assert set(state["criterion"]) == {"target_critic", "detail_critic", "optimizer"}
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0]
    assert "tardal_pixel" in log and "tardal_critic" in log
    more = load_training_config(NANO, {**overrides, "max_steps": 3})
    assert Trainer(more).fit(resume=True).step == 3
    without = load_training_config(NANO, {**overrides, "tardal.enabled": False, "max_steps": 4})
    with pytest.raises(ValueError, match="trained with the loss TargetAwareLoss > UniFusODLoss"):
        Trainer(without).fit(resume=True)
    with pytest.raises(TrainingConfigError, match=r"tardal\.pixel must be a finite number"):
        load_training_config(NANO, {"tardal.pixel": -1.0})


def test_target_contrast_is_inside_minus_the_ring_around_each_box():
    import numpy as np
    from fusion_training.metrics.target_contrast import box_contrasts, contrast_report

    image = np.full((40, 40), 0.2, np.float32)
    image[10:20, 10:20] = 0.9  # a warm 10 x 10 person; its ring: 5 px around it
    box = np.array([[15.0, 15.0, 10.0, 10.0, 0.0]])
    assert box_contrasts(image, box) == [pytest.approx(0.7)]
    as_uint8 = (image * 255).round().astype(np.uint8)
    assert box_contrasts(as_uint8, box)[0] == pytest.approx(0.7, abs=0.005)
    assert box_contrasts(image, np.array([[20.0, 20.0, 40.0, 40.0]])) == []  # no ring left
    flat = np.full((40, 40), 0.5, np.float32)
    sources = {"a": {"thermal": image, "visible": flat, "boxes": box, "labels": np.array([0])}}
    report = contrast_report({"a": (image * 0.5 + 0.25)}, sources, classes=[0])
    assert report["thermal"] == pytest.approx(0.7) and report["visible"] == pytest.approx(0.0)
    assert report["fused_to_thermal"] == pytest.approx(0.5)  # half of thermal's contrast kept
    assert math.isnan(contrast_report({"a": image}, sources, classes=[1])["fused"])
