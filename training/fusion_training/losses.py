"""UniFusOD training losses (seeds_digest.md §1.3): fusion, detection and their weighted combination.

Fusion (the fused luminance ``u`` against visible luminance ``x`` and thermal ``y``, all in [0, 1])::

    L_f    = λ1 · L_SSIM + λ2 · L_grad (+ λi · L_int)
    L_SSIM = (1 - SSIM(u, x)) / 2 + (1 - SSIM(u, y)) / 2
    L_grad = Σ_{k ∈ {3, 5, 7}} mean | |LoG_k u| - max(|LoG_k x|, |LoG_k y|) |
    L_int  = mean | u - max(x, y) |   (off by default; SeAFusion/TarDAL-style: the brighter
             source wins, so warm targets stay bright at night)

SSIM is Wang et al. (2004): Gaussian window 11 px, sigma 1.5, 'valid' filtering, data range 1.
LoG_k is a k x k Laplacian-of-Gaussian normalised to be a smoothed Laplacian at every size (zero
sum, and exactly 1 on the bowl (x² + y²) / 4), so the three scales weigh alike; borders are
reflect-padded so the maps keep the image size.

Detection: the model's named terms (torchvision-style, already normalised by the number of positive
locations) weighted as ``L_d = λ3 · bbox_regression + λ4 · classification + λc · bbox_ctrness
(+ λa · bbox_angle)``; SmoothL1 vs GIoU is the model config's ``detection_head.box_loss``.

Combination: the two task losses handed to the multitask method are ``(1 - λ) · L_f`` and
``λ · L_d``; with the weighted-sum method (unit weights) that is the paper's
``L = λ · L_d + (1 - λ) · L_f`` (λ = 0.4). UnityGrad's shared update does not depend on λ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DETECTION_TERMS",
    "LossOutput",
    "LossWeights",
    "UniFusODLoss",
    "fusion_losses",
    "gaussian_kernel1d",
    "gradient_loss",
    "laplacian_of_gaussian_kernel",
    "luminance",
    "ssim",
    "ssim_loss",
    "weigh_detection_terms",
    "weighted_total",
]

# ITU-R BT.601 luma, the convention of the model's fused output and of the fusion metrics.
_LUMA = (0.299, 0.587, 0.114)
# Model detection term -> LossWeights field that scales it.
DETECTION_TERMS = {
    "bbox_regression": "box",
    "classification": "focal",
    "bbox_ctrness": "ctrness",
    "bbox_angle": "angle",
}


@dataclass(frozen=True)
class LossWeights:
    """Every weight and size of the UniFusOD loss (paper defaults: λ = 0.4, λ1..λ4 = 1).

    detection_weight: λ in L = λ·L_d + (1 - λ)·L_f, in [0, 1].
    ssim, gradient: λ1, λ2 of the fusion loss; intensity: λi of the max-intensity term (0 = the
    paper's loss). box, focal: λ3, λ4 of the detection loss;
    ctrness, angle: weights of the centre-ness and (rotated heads) angle terms.
    log_kernel_sizes: odd LoG sizes of the gradient loss. ssim_window / ssim_sigma: SSIM window.
    """

    detection_weight: float = 0.4
    ssim: float = 1.0
    gradient: float = 1.0
    intensity: float = 0.0
    box: float = 1.0
    focal: float = 1.0
    ctrness: float = 1.0
    angle: float = 1.0
    log_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    ssim_window: int = 11
    ssim_sigma: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.detection_weight <= 1.0:
            raise ValueError(f"detection_weight must be in [0, 1], got {self.detection_weight!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        sizes = self.log_kernel_sizes
        if not sizes or not all(isinstance(k, int) and k >= 3 and k % 2 == 1 for k in sizes):
            raise ValueError(f"log_kernel_sizes must be odd integers >= 3, got {sizes!r}")
        if not (
            isinstance(self.ssim_window, int) and self.ssim_window >= 3 and self.ssim_window % 2
        ):
            raise ValueError(f"ssim_window must be an odd integer >= 3, got {self.ssim_window!r}")
        if not self.ssim_sigma > 0:
            raise ValueError(f"ssim_sigma must be > 0, got {self.ssim_sigma!r}")


# ----------------------------------------------------------------------------- kernels


def gaussian_kernel1d(size: int, sigma: float, dtype=torch.float32, device=None) -> Tensor:
    """Normalised Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def laplacian_of_gaussian_kernel(size: int, dtype=torch.float32, device=None) -> Tensor:
    """``[size, size]`` LoG with OpenCV's sigma for that size (0.3·((size-1)/2 - 1) + 0.8).

    Made zero-sum (no response to constants or ramps) and scaled so that its response to the
    bowl (x² + y²) / 4, whose Laplacian is 1, is exactly 1: a smoothed Laplacian at every size.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3, got {size!r}")
    sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    k = (r2 - 2 * sigma**2) / sigma**4 * torch.exp(-r2 / (2 * sigma**2))
    k = k - k.mean()
    k = k / (k * r2 / 4).sum()
    return k.to(dtype=dtype, device=device)


def _as_image(name: str, x: Tensor) -> Tensor:
    """Checked ``[B, 1, H, W]`` image in float32 (float64 kept, for exact checks)."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor [B, 1, H, W], got {shape}")
    return x if x.dtype == torch.float64 else x.float()


def luminance(rgb: Tensor) -> Tensor:
    """BT.601 luma ``[B, 1, H, W]`` of an RGB batch ``[B, 3, H, W]`` (same range as the input)."""
    if not isinstance(rgb, Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
        raise ValueError(f"rgb must be a tensor [B, 3, H, W], got {shape}")
    rgb = rgb if rgb.dtype == torch.float64 else rgb.float()
    return (rgb * rgb.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- fusion terms


def ssim(
    x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> Tensor:
    """Mean SSIM per image ``[B]`` of ``x`` and ``y`` ``[B, 1, H, W]`` ('valid' Gaussian windows)."""
    x, y = _as_image("x", x), _as_image("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have one shape")
    if min(x.shape[-2:]) < window:
        raise ValueError(
            f"images of {x.shape[-1]}x{x.shape[-2]} px are smaller than the SSIM window {window}"
        )
    g = gaussian_kernel1d(window, sigma, dtype=x.dtype, device=x.device)
    stacked = torch.cat((x, y, x * x, y * y, x * y), dim=1)  # [B, 5, H, W]
    blurred = F.conv2d(stacked, g.view(1, 1, 1, -1).expand(5, 1, 1, window), groups=5)
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1).expand(5, 1, window, 1), groups=5)
    mu_x, mu_y, e_xx, e_yy, e_xy = blurred.unbind(dim=1)
    var_x, var_y = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(1, 2))


def ssim_loss(
    fused: Tensor, visible: Tensor, thermal: Tensor, window: int = 11, sigma: float = 1.5
) -> Tensor:
    """Scalar ``(1 - SSIM(u, x)) / 2 + (1 - SSIM(u, y)) / 2`` averaged over the batch."""
    s_vis = ssim(fused, visible, window, sigma)
    s_ir = ssim(fused, thermal, window, sigma)
    return ((1 - s_vis) / 2 + (1 - s_ir) / 2).mean()


def _log_response(images: Tensor, size: int) -> Tensor:
    kernel = laplacian_of_gaussian_kernel(size, dtype=images.dtype, device=images.device)
    channels = images.shape[1]
    pad = size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, size, size), groups=channels)


def gradient_loss(
    fused: Tensor, visible: Tensor, thermal: Tensor, kernel_sizes: Sequence[int] = (3, 5, 7)
) -> Tensor:
    """Scalar Σ_k mean | |LoG_k u| - max(|LoG_k x|, |LoG_k y|) | (second-order max-gradient loss)."""
    u, x, y = (
        _as_image("fused", fused),
        _as_image("visible", visible),
        _as_image("thermal", thermal),
    )
    if not u.shape == x.shape == y.shape:
        raise ValueError(
            f"fused {tuple(u.shape)}, visible {tuple(x.shape)} and thermal {tuple(y.shape)} "
            "must have one shape"
        )
    if min(u.shape[-2:]) <= max(kernel_sizes) // 2:
        raise ValueError(
            f"images of {u.shape[-1]}x{u.shape[-2]} px are too small for LoG size {max(kernel_sizes)}"
        )
    total = u.new_zeros(())
    for size in kernel_sizes:
        response = _log_response(torch.cat((u, x, y), dim=1), size).abs()  # [B, 3, H, W]
        target = torch.maximum(response[:, 1], response[:, 2]).detach()
        total = total + (response[:, 0] - target).abs().mean()
    return total


def fusion_losses(
    fused: Tensor, rgb: Tensor, thermal: Tensor, weights: LossWeights | None = None
) -> dict[str, Tensor]:
    """Named fusion terms ``ssim``, ``gradient`` and ``intensity`` (unweighted) for the fused
    luminance ``[B,1,H,W]``, rgb ``[B,3,H,W]`` and thermal ``[B,1,H,W]``, all in [0, 1], in float32."""
    w = weights or LossWeights()
    with torch.autocast(fused.device.type, enabled=False):
        u, x, y = fused.float(), luminance(rgb), _as_image("thermal", thermal)
        return {
            "ssim": ssim_loss(u, x, y, w.ssim_window, w.ssim_sigma),
            "gradient": gradient_loss(u, x, y, w.log_kernel_sizes),
            "intensity": (u - torch.maximum(x, y)).abs().mean(),
        }


# ----------------------------------------------------------------------------- detection + total


def weigh_detection_terms(terms: Mapping[str, Tensor], weights: LossWeights) -> Tensor:
    """``λ3·bbox_regression + λ4·classification + λc·bbox_ctrness (+ λa·bbox_angle)``."""
    unknown = sorted(set(terms) - set(DETECTION_TERMS))
    if unknown:
        raise ValueError(
            f"unknown detection loss term(s) {unknown}; known: {sorted(DETECTION_TERMS)}"
        )
    if not terms:
        raise ValueError("terms must contain at least one detection loss term")
    return torch.stack(
        [getattr(weights, DETECTION_TERMS[name]) * value.float() for name, value in terms.items()]
    ).sum()


def weighted_total(detection: Tensor, fusion: Tensor, detection_weight: float = 0.4) -> Tensor:
    """The paper's single-objective baseline ``λ·L_d + (1 - λ)·L_f``."""
    if not 0.0 <= detection_weight <= 1.0:
        raise ValueError(f"detection_weight must be in [0, 1], got {detection_weight!r}")
    return detection_weight * detection + (1.0 - detection_weight) * fusion


@dataclass(frozen=True)
class LossOutput:
    """``tasks``: {"fusion": (1-λ)·L_f, "detection": λ·L_d} for the multitask method;
    ``terms``: every unweighted term plus ``fusion``, ``detection`` (L_f, L_d) and ``total``."""

    tasks: dict[str, Tensor]
    terms: dict[str, Tensor]


class UniFusODLoss:
    """Computes both task losses of one batch from the model's outputs."""

    def __init__(self, weights: LossWeights | None = None) -> None:
        self.weights = weights or LossWeights()

    def __call__(
        self,
        model: torch.nn.Module,
        out: Mapping[str, Tensor],
        rgb: Tensor,
        thermal: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
    ) -> LossOutput:
        """``model`` is the bare UniFusOD (its ``detection_loss`` assigns targets); ``out`` its
        forward outputs (cast to float32 here, so autocast outputs are fine)."""
        w = self.weights
        out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
        fusion_terms = fusion_losses(out["fused"], rgb, thermal, w)
        detection_terms = {k: v.float() for k, v in model.detection_loss(out, targets).items()}
        l_f = (
            w.ssim * fusion_terms["ssim"]
            + w.gradient * fusion_terms["gradient"]
            + w.intensity * fusion_terms["intensity"]
        )
        l_d = weigh_detection_terms(detection_terms, w)
        lam = w.detection_weight
        terms = {**fusion_terms, **detection_terms, "fusion": l_f, "detection": l_d}
        terms["total"] = weighted_total(l_d, l_f, lam)
        return LossOutput(tasks={"fusion": (1.0 - lam) * l_f, "detection": lam * l_d}, terms=terms)
