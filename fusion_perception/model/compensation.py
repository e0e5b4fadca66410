"""CLDyN's requirement-driven compensation (seeds_digest.md §5): a small network that adjusts a
frozen fusion network's output for one downstream consumer, conditioned on what that consumer
sees in the uncompensated image.

Layout (the seed's names in brackets)::

    fused, luminance, thermal [B,1,h,w] (network input size) + task feature [B,D]
      -> stem: 3x3 conv 3 -> C, LeakyReLU
      -> L injection blocks [A2SI], each: queries from the task and image embeddings pick an
         operator type per filter (1x1, or 3x3 with dilation 1, 2, 3: Gumbel-softmax, hard) and a
         soft mix of basis vectors from that filter's set of the bank [BVB]; an MLP turns the mix
         into the filter's convolution weights; each filter's output is normalized per sample
         (GroupNorm: the seed's BatchNorm would freeze one scale for kernels that change with
         every image), the filters are averaged and added back through a zero-initialised 1x1
         conv
      -> zero-initialised 1x1 conv -> correction [B,1,h,w]

The correction is added to the fused luminance (`apply`), so a fresh module is exactly the
identity and the frozen fusion network's image is where training starts. The correction is
smooth at the network's scale; the engine upsamples it onto the full-resolution fused image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OPERATOR_DILATIONS", "CompensationConfig", "CompensationNet"]

# (kernel size, dilation) of the operator types a filter can take
OPERATOR_DILATIONS = ((1, 1), (3, 1), (3, 2), (3, 3))


@dataclass(frozen=True)
class CompensationConfig:
    """Sizes of the compensation network (defaults: the seed's L = 2, M = 4, e2 = 256).

    channels: width of the image features (the seed's inC = 8).
    blocks: injection blocks (L). filters: dynamic filters per block (M); the bank holds one set
    of ``basis_vectors`` vectors of ``embed_dim`` per filter. tau: Gumbel-softmax temperature.
    """

    channels: int = 8
    blocks: int = 2
    filters: int = 4
    basis_vectors: int = 32
    embed_dim: int = 256
    tau: float = 0.5

    def __post_init__(self) -> None:
        for name in ("channels", "blocks", "filters", "basis_vectors"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.embed_dim, int) or self.embed_dim < len(OPERATOR_DILATIONS):
            raise ValueError(
                f"embed_dim must be an integer >= {len(OPERATOR_DILATIONS)}, got {self.embed_dim!r}"
            )
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {self.tau!r}")


def _cosine(queries: Tensor, keys: Tensor) -> Tensor:
    """``[B, M, E]`` x ``[M or 1, K, E]`` -> cosine similarities ``[B, M, K]``."""
    return torch.einsum("bme,mke->bmk", F.normalize(queries, dim=-1), F.normalize(keys, dim=-1))


class SemanticInjection(nn.Module):
    """One dynamic block: image features ``[B, C, h, w]`` + task embedding ``[B, E]`` ->
    features ``[B, C, h, w]`` (the identity at initialisation)."""

    def __init__(self, cfg: CompensationConfig) -> None:
        super().__init__()
        c, e, m = cfg.channels, cfg.embed_dim, cfg.filters
        self.channels, self.filters, self.tau = c, m, cfg.tau
        self.image_embed = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, e),
        )
        self.queries = nn.Sequential(nn.Linear(2 * e, e), nn.LeakyReLU(0.2), nn.Linear(e, m * e))
        bank = torch.empty(m, cfg.basis_vectors, e)
        for vectors in bank:
            nn.init.orthogonal_(vectors)
        self.bank = nn.Parameter(bank)
        prototypes = torch.empty(len(OPERATOR_DILATIONS), e)
        nn.init.orthogonal_(prototypes)
        self.register_buffer("prototypes", prototypes[None])  # fixed: one per operator type
        self.to_weights = nn.Sequential(
            nn.Linear(e, 64), nn.LeakyReLU(0.2), nn.Linear(64, c * c * 9)
        )
        centre = torch.zeros(len(OPERATOR_DILATIONS), 1, 1, 3, 3)
        for k, (size, _) in enumerate(OPERATOR_DILATIONS):
            centre[k, ..., 1, 1] = 1.0
            if size == 3:
                centre[k] = 1.0
        self.register_buffer("kernel_masks", centre)  # a 1x1 operator keeps the centre tap
        # per-sample normalization: generated kernels change scale from image to image, and
        # batch statistics frozen at inference would not follow them
        self.norm = nn.GroupNorm(1, c)
        self.out = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def choose_operators(self, queries: Tensor) -> Tensor:
        """One-hot operator type per filter ``[B, M, K]``: Gumbel-softmax (hard, straight-through)
        in training, the best-matching prototype in evaluation."""
        logits = _cosine(queries, self.prototypes.expand(self.filters, -1, -1)) / self.tau
        if self.training:
            return F.gumbel_softmax(logits, tau=1.0, hard=True, dim=-1)
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)

    def forward(self, x: Tensor, task: Tensor) -> Tensor:
        batch, c, height, width = x.shape
        e = self.bank.shape[-1]
        queries = self.queries(torch.cat((task, self.image_embed(x)), dim=1)).view(batch, -1, e)
        operators = self.choose_operators(queries)  # [B, M, K]
        mix = torch.softmax(_cosine(queries, self.bank) / self.tau, dim=-1)  # [B, M, V]
        basis = torch.einsum("bmv,mve->bme", mix, self.bank)
        kernels = self.to_weights(basis).view(batch, self.filters, 1, c, c, 3, 3)
        masked = kernels * self.kernel_masks[None, None]  # [B, M, K, C, C, 3, 3]
        # per-sample convolution: the batch folds into groups
        grouped = x.reshape(1, batch * c, height, width)
        outputs = 0.0
        for k, (_, dilation) in enumerate(OPERATOR_DILATIONS):
            weight = masked[:, :, k].permute(1, 0, 2, 3, 4, 5).reshape(-1, c, 3, 3)
            y = F.conv2d(
                grouped.repeat(1, self.filters, 1, 1),
                weight,
                padding=dilation,
                dilation=dilation,
                groups=batch * self.filters,
            )
            y = y.view(self.filters, batch, c, height, width).permute(1, 0, 2, 3, 4)
            outputs = outputs + operators[:, :, k, None, None, None] * y
        mixed = F.leaky_relu(self.norm(outputs.reshape(-1, c, height, width)), 0.2)
        mixed = mixed.view(batch, self.filters, c, height, width).mean(dim=1)
        return x + self.out(mixed)


class CompensationNet(nn.Module):
    """(fused, luminance, thermal ``[B, 1, h, w]``, task feature ``[B, D]``) -> the correction
    ``[B, 1, h, w]`` to add to the fused luminance; zero at initialisation. ``task_features`` is
    D, the width of the downstream network's feature vector."""

    def __init__(self, cfg: CompensationConfig, task_features: int) -> None:
        super().__init__()
        if not isinstance(task_features, int) or task_features < 1:
            raise ValueError(f"task_features must be an integer >= 1, got {task_features!r}")
        self.cfg, self.task_features = cfg, task_features
        self.task_embed = nn.Sequential(
            nn.LayerNorm(task_features),
            nn.Linear(task_features, cfg.embed_dim),
            nn.LeakyReLU(0.2),
        )
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.channels, 3, padding=1), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(SemanticInjection(cfg) for _ in range(cfg.blocks))
        self.head = nn.Conv2d(cfg.channels, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, fused: Tensor, luminance: Tensor, thermal: Tensor, task: Tensor) -> Tensor:
        if task.dim() != 2 or task.shape[1] != self.task_features:
            raise ValueError(
                f"task features must be [B, {self.task_features}], got {tuple(task.shape)}"
            )
        embedded = self.task_embed(task)
        x = self.stem(torch.cat((fused, luminance, thermal), dim=1))
        for block in self.blocks:
            x = block(x, embedded)
        return self.head(x)

    @staticmethod
    def apply(fused: Tensor, correction: Tensor) -> Tensor:
        """The compensated image: ``fused`` (any size) plus the correction resized onto it."""
        if correction.shape[-2:] != fused.shape[-2:]:
            correction = F.interpolate(
                correction, size=fused.shape[-2:], mode="bilinear", align_corners=False
            )
        return (fused + correction).clamp(0.0, 1.0)
