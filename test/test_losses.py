"""UniFusOD training losses on analytic cases: SSIM, LoG max-gradient loss, detection weighting."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# test the working tree's training/ package, not a copy installed into the venv
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from fusion_training import losses
from fusion_training.metrics.fusion import ssim as numpy_ssim

from fusion_perception.model import build_model, load_model_config

REPO = Path(__file__).resolve().parents[1]


def _image(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)[None, None]


def _random_pair(seed: int = 0, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size, size, generator=gen)
    y = (0.6 * x + 0.4 * torch.rand(1, 1, size, size, generator=gen)).clamp(0, 1)
    return x, y


# ----------------------------------------------------------------------------- SSIM


def test_ssim_of_an_image_with_itself_is_one():
    x, _ = _random_pair()
    assert losses.ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_ssim_of_constant_images_is_the_luminance_term():
    # no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    a, b = 0.2, 0.7
    c1 = 1e-4
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = losses.ssim(
        torch.full((1, 1, 16, 16), a, dtype=torch.float64),
        torch.full((1, 1, 16, 16), b, dtype=torch.float64),
    )
    assert value.item() == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_the_textbook_metric_implementation():
    # independent NumPy implementation (Wang 2004, valid filtering) on the 0..255 scale
    x, y = _random_pair(3)
    expected = numpy_ssim(x[0, 0].double().numpy() * 255, y[0, 0].double().numpy() * 255)
    assert losses.ssim(x, y).item() == pytest.approx(expected, abs=1e-4)


def test_ssim_loss_is_zero_for_identical_sources_and_half_the_dissimilarity_otherwise():
    x, y = _random_pair(1)
    assert losses.ssim_loss(x, x, x).item() == pytest.approx(0.0, abs=1e-5)
    # u = x: the visible term vanishes, the thermal term is (1 - SSIM(x, y)) / 2
    expected = (1 - losses.ssim(x, y).item()) / 2
    assert losses.ssim_loss(x, x, y).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_rejects_images_smaller_than_the_window():
    small = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="smaller than the SSIM window 11"):
        losses.ssim(small, small)


# ----------------------------------------------------------------------------- LoG


@pytest.mark.parametrize("size", [3, 5, 7])
def test_log_kernel_is_a_laplacian(size):
    k = losses.laplacian_of_gaussian_kernel(size, dtype=torch.float64)
    assert k.shape == (size, size)
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    r = torch.arange(size, dtype=torch.float64) - size // 2
    # constants and ramps have no second derivative
    assert k.sum().item() == pytest.approx(0.0, abs=1e-12)
    assert (k * r[None, :]).sum().item() == pytest.approx(0.0, abs=1e-12)
    # f = 3 x^2 + 2 y^2 has Laplacian 10 everywhere
    quadratic = 3 * r[None, :] ** 2 + 2 * r[:, None] ** 2
    assert (k * quadratic).sum().item() == pytest.approx(10.0, rel=1e-9)
    # a slow cosine cos(w x) has Laplacian -w^2 cos(w x): the transfer function at w ~ -w^2
    w = 0.15
    transfer = (k * torch.cos(w * r)[None, :]).sum().item()
    assert transfer == pytest.approx(-w * w, rel=0.05)


def _cosine_image(size: int, periods: int, amplitude: float) -> np.ndarray:
    # even about both borders, so reflect padding continues it exactly
    w = math.pi * periods / (size - 1)
    row = amplitude * (0.5 + 0.5 * np.cos(w * np.arange(size)))
    return np.tile(row, (size, 1)), w


def test_gradient_loss_of_a_cosine_against_a_flat_image_is_analytic():
    size, amplitude = 33, 0.8
    image, w = _cosine_image(size, periods=4, amplitude=amplitude)
    x = np.arange(size)
    expected = 0.0
    for k in (3, 5, 7):
        kernel = losses.laplacian_of_gaussian_kernel(k, dtype=torch.float64).numpy()
        r = np.arange(k) - k // 2
        transfer = float((kernel * np.cos(w * r)[None, :]).sum())  # LoG(cos(w x)) = T cos(w x)
        expected += abs(transfer) * amplitude / 2 * np.abs(np.cos(w * x)).mean()
    flat = torch.full((1, 1, size, size), 0.3)
    cosine = _image(image)
    value = losses.gradient_loss(flat, cosine, flat)
    assert value.item() == pytest.approx(expected, rel=1e-4)
    # the fused image equal to the only textured source meets the target exactly
    assert losses.gradient_loss(cosine, cosine, flat).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_loss_targets_the_elementwise_max_of_both_sources():
    # texture on the left in the visible image, on the right in the thermal one (disjoint)
    gen = np.random.default_rng(0)
    vis, ir = np.zeros((24, 48)), np.zeros((24, 48))
    vis[:, 2:18] = gen.random((24, 16))
    ir[:, 30:46] = gen.random((24, 16))
    x, y = _image(vis), _image(ir)
    zero = torch.zeros_like(x)
    assert losses.gradient_loss(x + y, x, y).item() == pytest.approx(0.0, abs=1e-6)
    # halving the union halves every response: half the loss of a flat image
    half = losses.gradient_loss((x + y) / 2, x, y).item()
    assert half == pytest.approx(losses.gradient_loss(zero, x, y).item() / 2, rel=1e-5)
    # only one source kept: the other side's texture is missed
    assert losses.gradient_loss(x, x, y).item() > 0.2 * losses.gradient_loss(zero, x, y).item()


def test_gradient_loss_of_constant_images_is_zero():
    a = torch.full((2, 1, 20, 20), 0.4)
    assert losses.gradient_loss(a, a * 0.5, a * 2).item() == pytest.approx(0.0, abs=1e-6)


def test_fusion_losses_are_float32_and_only_train_the_fused_image():
    x, y = _random_pair(5, 32)
    rgb = x.expand(1, 3, 32, 32).clone()
    fused = ((x + y) / 2).to(torch.bfloat16).requires_grad_(True)
    terms = losses.fusion_losses(fused, rgb, y)
    assert set(terms) == {"ssim", "gradient", "intensity"}
    assert all(t.dtype == torch.float32 and t.ndim == 0 for t in terms.values())
    (terms["ssim"] + terms["gradient"] + terms["intensity"]).backward()
    assert fused.grad is not None and torch.isfinite(fused.grad.float()).all()


def test_intensity_term_is_distance_to_the_brighter_source():
    x = torch.full((1, 1, 16, 16), 0.2)
    y = torch.full((1, 1, 16, 16), 0.7)
    rgb = x.expand(1, 3, 16, 16).clone()
    assert losses.fusion_losses(y.clone(), rgb, y)["intensity"].item() == pytest.approx(0.0)
    assert losses.fusion_losses(x.clone(), rgb, y)["intensity"].item() == pytest.approx(0.5)


def test_luminance_uses_bt601_weights():
    rgb = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    assert losses.luminance(rgb).item() == pytest.approx(0.299 + 0.5 * 0.587 + 0.25 * 0.114)


@pytest.fixture(scope="session")
def vifb_pair(vifb_dir):
    import cv2

    vis = cv2.imread(str(vifb_dir / "vis" / "carLight.jpg"), cv2.IMREAD_COLOR)
    ir = cv2.imread(str(vifb_dir / "ir" / "carLight.jpg"), cv2.IMREAD_GRAYSCALE)
    assert vis is not None and ir is not None
    vis = cv2.resize(cv2.cvtColor(vis, cv2.COLOR_BGR2RGB), (96, 72), interpolation=cv2.INTER_AREA)
    ir = cv2.resize(ir, (96, 72), interpolation=cv2.INTER_AREA)
    rgb = torch.from_numpy(vis).permute(2, 0, 1)[None].float() / 255
    return rgb, torch.from_numpy(ir)[None, None].float() / 255


def test_optimising_a_fused_image_on_real_pairs_beats_both_sources(vifb_pair):
    rgb, thermal = vifb_pair
    visible = losses.luminance(rgb)

    def terms_of(u):
        return {k: v.item() for k, v in losses.fusion_losses(u, rgb, thermal).items()}

    start = (visible + thermal) / 2
    logits = torch.logit(start.clamp(0.01, 0.99)).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(50):
        terms = losses.fusion_losses(torch.sigmoid(logits), rgb, thermal)
        optimizer.zero_grad()
        (terms["ssim"] + terms["gradient"]).backward()
        optimizer.step()
    fused = terms_of(torch.sigmoid(logits).detach())
    before = terms_of(start)
    assert fused["ssim"] + fused["gradient"] < before["ssim"] + before["gradient"]
    assert fused["gradient"] < 0.7 * before["gradient"]  # the average blurs the stronger edges
    for source in (visible, thermal):  # keeping only one modality is worse on both terms
        single = terms_of(source)
        assert fused["ssim"] < single["ssim"] and fused["gradient"] < single["gradient"]


# ----------------------------------------------------------------------------- detection + total


def test_detection_terms_are_weighted_by_their_lambdas():
    weights = losses.LossWeights(box=2.0, focal=3.0, ctrness=0.5, angle=4.0)
    terms = {
        "classification": torch.tensor(1.0),
        "bbox_regression": torch.tensor(10.0),
        "bbox_ctrness": torch.tensor(2.0),
        "bbox_angle": torch.tensor(0.25),
    }
    # 2 * 10 + 3 * 1 + 0.5 * 2 + 4 * 0.25
    assert losses.weigh_detection_terms(terms, weights).item() == pytest.approx(25.0)
    with pytest.raises(ValueError, match="bbox_iou"):
        losses.weigh_detection_terms({"bbox_iou": torch.tensor(1.0)}, weights)


def test_weighted_total_is_the_papers_combination():
    assert losses.weighted_total(torch.tensor(2.0), torch.tensor(1.0), 0.4).item() == (
        pytest.approx(0.4 * 2.0 + 0.6 * 1.0)
    )
    with pytest.raises(ValueError, match="detection_weight"):
        losses.weighted_total(torch.tensor(2.0), torch.tensor(1.0), 1.5)


@pytest.mark.parametrize(
    ("field", "value"), [("ssim", -1.0), ("detection_weight", 1.2), ("log_kernel_sizes", (4,))]
)
def test_loss_weights_reject_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        losses.LossWeights(**{field: value})


def test_unifusod_loss_on_a_nano_model_splits_tasks_by_lambda():
    torch.manual_seed(0)
    cfg = load_model_config(REPO / "config" / "models" / "nano.yaml").with_overrides(
        {"detection_head.num_classes": 2}
    )
    model = build_model(cfg)
    rgb, thermal = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 64, 64)
    targets = [
        {"boxes": torch.tensor([[30.0, 28.0, 20.0, 16.0, 0.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    criterion = losses.UniFusODLoss(losses.LossWeights(detection_weight=0.25))
    result = criterion(model, model(rgb, thermal), rgb, thermal, targets)
    terms = result.terms
    assert terms["fusion"].item() == pytest.approx(terms["ssim"].item() + terms["gradient"].item())
    assert result.tasks["fusion"].item() == pytest.approx(0.75 * terms["fusion"].item())
    assert result.tasks["detection"].item() == pytest.approx(0.25 * terms["detection"].item())
    assert terms["total"].item() == pytest.approx(
        result.tasks["fusion"].item() + result.tasks["detection"].item()
    )
    # without any object, every box term is exactly zero
    empty = [targets[1], targets[1]]
    no_objects = criterion(model, model(rgb, thermal), rgb, thermal, empty).terms
    assert no_objects["bbox_regression"].item() == 0.0
    assert no_objects["bbox_ctrness"].item() == 0.0
