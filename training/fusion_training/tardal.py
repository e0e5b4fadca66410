"""TarDAL's target-aware dual adversarial fusion loss (seeds_digest.md §3), as a training option.

Two extra terms push the fused image ``u`` towards what an operator needs at night:

* a saliency-degree-weighted pixel loss: each source's histogram-contrast saliency
  ``S(k) = Σ_i H(i) |v(k) - i|`` (H the image's 256-bin grey histogram) weighs how closely ``u``
  follows it, with the bounded weights ``w_ir = S_ir / (S_ir + S_vis)`` and ``w_vis = 1 - w_ir``
  applied inside the distance: ``mean |w_ir (u - ir)| + mean |w_vis (u - vis)|`` (the digest's
  correction of the paper's garbled ``S_x / (S_x - S_y)``);
* two critics (WGAN-div, ``k = 2``, ``p = 6``): the target critic compares thermal with ``u``
  inside the target mask (pixel intensities), the detail critic compares the Sobel gradient of
  visible with that of ``u`` outside it. The masks come from the training boxes, so no salient-
  object network is needed.

The generator's fusion loss gains ``α · L_pixel + β · L_adv`` (α = 20, β = 0.1 as in the paper).
The critics have their own optimizer and step: `TargetAwareLoss` first updates them on the
detached fused image (training mode only), then computes the generator's terms with the critics'
parameters frozen, so the fusion network's backward pass never touches them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_perception.boxes import enclosing_xyxy
from fusion_training.auxiliary import AuxiliaryLoss
from fusion_training.losses import luminance

__all__ = [
    "Critic",
    "TarDALConfig",
    "TargetAwareLoss",
    "critic_loss",
    "histogram_saliency",
    "saliency_pixel_loss",
    "sobel_magnitude",
    "target_masks",
]


@dataclass(frozen=True)
class TarDALConfig:
    """The ``tardal`` section of a training config (off by default).

    pixel / adversarial: α and β of ``L_f + α·L_pixel + β·L_adv``; penalty_k / penalty_p: the
    WGAN-div gradient penalty ``k · E‖∇D(x̂)‖^p``; critic_lr: Adam learning rate of the critics;
    critic_width: channels of the critics' first layer (doubled at each of their 4 convs).
    """

    enabled: bool = False
    pixel: float = 20.0
    adversarial: float = 0.1
    penalty_k: float = 2.0
    penalty_p: float = 6.0
    critic_lr: float = 1e-4
    critic_width: int = 16

    def __post_init__(self) -> None:
        for name in ("pixel", "adversarial", "penalty_k", "penalty_p", "critic_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.critic_width < 1:
            raise ValueError(f"critic_width must be >= 1, got {self.critic_width!r}")


# ----------------------------------------------------------------------------- pixel loss


def histogram_saliency(image: Tensor) -> Tensor:
    """Histogram-contrast saliency ``[B, 1, H, W]`` of images in [0, 1]: for each pixel, the mean
    absolute grey-level distance (in 0..255) to every pixel of its image. Not differentiable (a
    weight, as in TarDAL)."""
    levels = (image.detach().float().clamp(0, 1) * 255).round().long()  # [B, 1, H, W]
    batch = levels.shape[0]
    flat = levels.view(batch, -1)
    hist = torch.zeros(batch, 256, device=image.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=hist.dtype))
    hist = hist / flat.shape[1]
    grey = torch.arange(256, device=image.device, dtype=hist.dtype)
    distance = (grey[:, None] - grey[None, :]).abs()  # [256, 256]
    per_level = hist @ distance  # [B, 256]: S of each grey level
    return torch.gather(per_level, 1, flat).view_as(image).float()


def saliency_pixel_loss(fused: Tensor, visible: Tensor, thermal: Tensor) -> Tensor:
    """``mean |w_ir (u - ir)| + mean |w_vis (u - vis)|`` with ``w_ir = S_ir / (S_ir + S_vis)``."""
    s_ir, s_vis = histogram_saliency(thermal), histogram_saliency(visible)
    w_ir = s_ir / (s_ir + s_vis).clamp_min(1e-6)
    w_ir = torch.where(s_ir + s_vis > 0, w_ir, torch.full_like(w_ir, 0.5))  # flat pair: equal
    return (w_ir * (fused - thermal)).abs().mean() + ((1 - w_ir) * (fused - visible)).abs().mean()


# ----------------------------------------------------------------------------- critics


def sobel_magnitude(image: Tensor) -> Tensor:
    """|∇| by 3x3 Sobel (L1 of the two directions), reflect-padded, ``[B, 1, H, W]``."""
    kx = image.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    kernels = torch.stack((kx, kx.t()))[:, None]  # [2, 1, 3, 3]
    gradients = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), kernels)
    return gradients.abs().sum(dim=1, keepdim=True)


class Critic(nn.Module):
    """TarDAL's discriminator: four stride-2 3x3 convolutions with LeakyReLU(0.2) and one linear
    layer; a WGAN critic (no sigmoid). Global average pooling before the linear layer lets it take
    any image size (TarDAL's code flattens a fixed size)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for i in range(4):
            layers += [nn.Conv2d(channels, width * 2**i, 3, 2, 1), nn.LeakyReLU(0.2)]
            channels = width * 2**i
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x).mean(dim=(2, 3))).squeeze(1)


def critic_loss(critic: Critic, real: Tensor, fake: Tensor, k: float, p: float) -> Tensor:
    """WGAN-div: ``-mean D(real) + mean D(fake) + k · mean ‖∇D(x̂)‖₂^p`` on random interpolates
    x̂ of real and (detached) fake samples."""
    fake = fake.detach()
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    penalty = grad.flatten(1).norm(dim=1).pow(p).mean()
    return -critic(real).mean() + critic(fake).mean() + k * penalty


def target_masks(targets: Sequence[Mapping[str, Tensor]], height: int, width: int) -> Tensor:
    """``[B, 1, H, W]``: 1 inside the (axis-aligned envelope of the) boxes of each labelled
    image, 0 elsewhere and everywhere in unlabelled ones."""
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    masks = torch.zeros(len(targets), 1, height, width, device=device)
    for i, target in enumerate(targets):
        if not bool(target.get("labelled", True)) or target["boxes"].shape[0] == 0:
            continue
        for x1, y1, x2, y2 in enclosing_xyxy(target["boxes"].float()).tolist():
            left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
            right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
            masks[i, :, top:bottom, left:right] = 1.0
    return masks


# ----------------------------------------------------------------------------- the loss


class TargetAwareLoss(AuxiliaryLoss):
    """UniFusOD's loss plus TarDAL's pixel and adversarial terms in the fusion task; owns the two
    critics and their optimizer."""

    def __init__(self, base: Any, config: TarDALConfig, device: torch.device) -> None:
        super().__init__(base)
        self.config = config
        self.target_critic = Critic(config.critic_width).to(device)
        self.detail_critic = Critic(config.critic_width).to(device)
        self.networks = {"target_critic": self.target_critic, "detail_critic": self.detail_critic}
        critic_params = [*self.target_critic.parameters(), *self.detail_critic.parameters()]
        self.optimizer = torch.optim.Adam(critic_params, lr=config.critic_lr, betas=(0.5, 0.999))

    def critics(self) -> list[Critic]:
        return [self.target_critic, self.detail_critic]

    def _samples(self, fused: Tensor, rgb: Tensor, thermal: Tensor, masks: Tensor):
        """(real, fake) of the target critic and of the detail critic."""
        visible = luminance(rgb)
        target = (thermal.float() * masks, fused * masks)
        detail = (sobel_magnitude(visible) * (1 - masks), sobel_magnitude(fused) * (1 - masks))
        return target, detail

    def critic_step(self, fused: Tensor, rgb: Tensor, thermal: Tensor, masks: Tensor) -> Tensor:
        """One optimizer step of both critics on the detached fused image; their loss."""
        k, p = self.config.penalty_k, self.config.penalty_p
        with torch.enable_grad():
            (t_real, t_fake), (d_real, d_fake) = self._samples(fused.detach(), rgb, thermal, masks)
            loss = critic_loss(self.target_critic, t_real, t_fake, k, p)
            loss = loss + critic_loss(self.detail_critic, d_real, d_fake, k, p)
            return self.step_apart(loss)

    def term(self, fused, rgb, thermal, targets, terms, train) -> Tensor:
        masks = target_masks(targets, fused.shape[-2], fused.shape[-1]).to(fused.device)
        if train:
            terms["tardal_critic"] = self.critic_step(fused, rgb, thermal, masks)
        pixel = saliency_pixel_loss(fused, luminance(rgb), thermal.float())
        with self.frozen():
            (_, t_fake), (_, d_fake) = self._samples(fused, rgb, thermal, masks)
            adversarial = -self.target_critic(t_fake).mean() - self.detail_critic(d_fake).mean()
        terms.update(tardal_pixel=pixel, tardal_adversarial=adversarial)
        return self.config.pixel * pixel + self.config.adversarial * adversarial
