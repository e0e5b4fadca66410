"""Task compensation at run time (CLDyN, seeds_digest.md §5): one file that turns the frozen
fusion network's image into the image one downstream consumer does best on.

The file holds the `CompensationNet` weights, the downstream network whose features say what it
needs (a frozen detector that reads our published colour image), and the fingerprint of the
fusion checkpoint it was trained against, so it refuses to run behind another one. The fusion
network is never retrained: the viewer keeps the plain fused image, and a consumer gets the
compensated one (the node's ``fusion_task`` parameter).

The consumer sees what the node publishes: the fused luminance with the visible image's chroma
(`consumer_image`; adding the luma change to every channel keeps BT.601 Cb and Cr).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fusion_perception.checkpoint import (
    FORMAT_NAME,
    Checkpoint,
    CheckpointError,
    check_finite,
    checkpoint_from_dict,
)
from fusion_perception.model.compensation import CompensationConfig, CompensationNet
from fusion_perception.model.unifusod import LUMA

__all__ = [
    "COMPENSATION_FORMAT",
    "FUSION_TASKS",
    "Compensation",
    "CompensationError",
    "DownstreamDetector",
    "consumer_image",
    "load_compensation",
    "luminance",
    "save_compensation",
]

COMPENSATION_FORMAT = "fusion_perception.compensation"
COMPENSATION_VERSION = 1
# who consumes the fused image: a person (the fusion network's own image) or a detector
FUSION_TASKS = ("viewer", "detector")


class CompensationError(CheckpointError):
    """A compensation file that is missing, malformed or made for another fusion checkpoint."""


def luminance(rgb: Tensor) -> Tensor:
    """BT.601 luma ``[B, 1, H, W]`` of ``rgb`` ``[B, 3, H, W]``, as the network computes it."""
    weights = torch.tensor(LUMA, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def consumer_image(fused: Tensor, rgb: Tensor) -> Tensor:
    """The colour image a consumer of the fused topic reads: ``rgb`` ``[B, 3, H, W]`` with its
    luma replaced by ``fused`` ``[B, 1, H, W]`` (all in [0, 1])."""
    return (rgb + (fused - luminance(rgb))).clamp(0.0, 1.0)


class DownstreamDetector(nn.Module):
    """A frozen detector that consumes the fused colour image: a single-camera checkpoint (a
    model trained with thermal always blanked, e.g. the study's visible-only arm).

    ``run(image)`` gives its dense outputs and its requirement feature: the average and the
    maximum of each neck level (CLDyN reads one hooked layer of the task network the same way).
    The network is frozen, but gradients reach its input image.
    """

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model(device)
        self.model.requires_grad_(False)
        self._levels: list[Tensor] = []
        self._blank: tuple[Any, list[Tensor]] | None = None  # (size, device, dtype) -> features
        self.model.neck.register_forward_hook(lambda _m, _i, out: self._levels.extend(out))
        self.task_features = (
            2
            * len(checkpoint.model_config.detection_head.strides)
            * (checkpoint.model_config.neck.channels)
        )

    def train(self, mode: bool = True) -> DownstreamDetector:
        return self  # always in evaluation mode: its BatchNorm statistics stay the trained ones

    def run(self, image: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """image ``[B, 3, H, W]`` in [0, 1] -> (dense outputs, features ``[B, D]``)."""
        self._levels.clear()
        out = self.model(image, torch.zeros_like(image[:, :1]))
        return out, self._pooled()

    def features(self, image: Tensor) -> Tensor:
        """``run``'s features alone, for the per-frame path: the backbone runs on the image
        only (the blank thermal camera's features are computed once per size) and the detection
        head not at all."""
        model = self.model
        visible = model.backbone((image - model.input_mean) / model.input_std)
        blank = [b.expand(image.shape[0], -1, -1, -1) for b in self._blank_features(image)]
        self._levels.clear()
        model.neck(visible, blank)
        return self._pooled()

    def _blank_features(self, image: Tensor) -> list[Tensor]:
        key = (tuple(image.shape[-2:]), image.device, image.dtype)
        if self._blank is None or self._blank[0] != key:
            model = self.model
            zeros = torch.zeros_like(image[:1])
            with torch.no_grad():
                self._blank = (key, model.backbone((zeros - model.input_mean) / model.input_std))
        return self._blank[1]

    def _pooled(self) -> Tensor:
        levels = self._levels
        return torch.cat(
            [torch.cat((f.mean(dim=(2, 3)), f.amax(dim=(2, 3))), 1) for f in levels], 1
        )

    def loss(self, out: dict[str, Tensor], targets: Sequence[dict[str, Tensor]]) -> Tensor:
        """Its summed detection loss on those outputs."""
        return sum(self.model.detection_loss(out, targets).values())


@dataclass
class Compensation:
    """A trained compensation for one fusion checkpoint and one downstream consumer."""

    config: CompensationConfig
    net: CompensationNet
    downstream: DownstreamDetector
    fusion_fingerprint: str
    provenance: dict[str, Any]

    @classmethod
    def fresh(
        cls,
        config: CompensationConfig,
        downstream: Checkpoint,
        fusion_fingerprint: str,
        device: str | torch.device = "cpu",
    ) -> Compensation:
        """An untrained compensation (the identity) for ``downstream`` behind that fusion."""
        detector = DownstreamDetector(downstream, device)
        net = CompensationNet(config, detector.task_features).to(device)
        return cls(config, net, detector, fusion_fingerprint, {})

    def to(self, device: str | torch.device) -> Compensation:
        self.net.to(device)
        self.downstream.to(device)
        return self

    def correction(self, fused: Tensor, rgb: Tensor, thermal: Tensor) -> Tensor:
        """The correction ``[B, 1, h, w]`` for the fusion network's image at its input size."""
        task = self.downstream.features(consumer_image(fused, rgb))
        return self.net(fused, luminance(rgb), thermal, task)

    def check_fusion(self, checkpoint: Checkpoint) -> None:
        """Refuse to run behind a fusion checkpoint other than the one it was trained for."""
        found = checkpoint.fingerprint()
        if found != self.fusion_fingerprint:
            raise CompensationError(
                f"compensation: trained for the fusion checkpoint {self.fusion_fingerprint[:12]}, "
                f"but this checkpoint is {found[:12]}; train one for it "
                "(fusion-train-compensation) or run with fusion_task: viewer"
            )

    def to_dict(self, half: bool = False) -> dict[str, Any]:
        """Plain tensors and builtins; ``half`` stores the float parameters as float16 (half the
        file; they load back into float32 modules). Buffers such as BatchNorm statistics stay
        float32: a running variance can exceed float16's range."""

        def store(state: dict[str, Tensor], module: nn.Module) -> dict[str, Tensor]:
            names = {name for name, _ in module.named_parameters()}
            return {
                k: v.detach().cpu().half() if half and k in names else v.detach().cpu()
                for k, v in state.items()
            }

        downstream = self.downstream.checkpoint.to_dict()
        downstream["state_dict"] = store(downstream["state_dict"], self.downstream.model)
        return {
            "format": COMPENSATION_FORMAT,
            "format_version": COMPENSATION_VERSION,
            "config": asdict(self.config),
            "state_dict": store(self.net.state_dict(), self.net),
            "downstream": downstream,
            "fusion_fingerprint": self.fusion_fingerprint,
            "provenance": dict(self.provenance),
        }


def save_compensation(
    compensation: Compensation, path: str | os.PathLike, half: bool = False
) -> Path:
    """Write atomically, like `fusion_perception.checkpoint.save_checkpoint` (``half``: see
    `Compensation.to_dict`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(compensation.to_dict(half), partial)
    partial.replace(path)
    return path


def load_compensation(path: str | os.PathLike, device: str | torch.device = "cpu") -> Compensation:
    """Read and check a compensation file (never unpickles code); errors name the field."""
    path = Path(path)
    if not path.is_file():
        raise CompensationError(f"compensation: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CompensationError(f"compensation: {path} is not a readable file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != COMPENSATION_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        hint = " (a model checkpoint: give it as checkpoint)" if found == FORMAT_NAME else ""
        raise CompensationError(
            f"compensation: {path} is not a compensation file (format {found!r}){hint}"
        )
    if data.get("format_version", 0) > COMPENSATION_VERSION:
        raise CompensationError(
            f"compensation: format_version {data['format_version']} is newer than this package "
            f"reads ({COMPENSATION_VERSION}); upgrade fusion_perception"
        )
    try:
        config = CompensationConfig(**data["config"])
        downstream = checkpoint_from_dict(data["downstream"])
        fingerprint = str(data["fusion_fingerprint"])
        state = data["state_dict"]
    except KeyError as exc:
        raise CompensationError(f"compensation: {path} lacks the field {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise CompensationError(f"compensation: {path}: {exc}") from exc
    check_finite(state)
    compensation = Compensation.fresh(config, downstream, fingerprint, device)
    try:
        compensation.net.load_state_dict(state)
    except RuntimeError as exc:
        raise CompensationError(
            f"compensation: state_dict does not fit its config ({exc})"
        ) from exc
    compensation.net.eval()
    compensation.provenance = dict(data.get("provenance", {}))
    return compensation
