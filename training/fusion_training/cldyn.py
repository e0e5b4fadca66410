"""CLDyN's second stage (seeds_digest.md §5.2): train a task compensation behind a frozen fusion
network, for one frozen downstream consumer, with the reward–penalty loss

    L = L_task(F_c) + δ · ReLU(L_task(F_c) − L_task(F_u))

where F_u is the fusion network's image and F_c the compensated one, both as the consumer reads
them (fused luma + visible chroma). The task loss itself rewards the compensation; the penalty
(δ = 5, the seed's value) acts on every batch where it makes the consumer worse. Only the
compensation's parameters train: the fusion network and the consumer are frozen, and the
consumer's features on F_u are the requirement signal, so no labels are needed at run time.

The data are a training config's (its dataset and augmentation, at the fusion checkpoint's input
size, modality dropout off: the consumer runs behind both cameras). The result is one file the
engine and the node load (`fusion_perception.compensation`).

    fusion-train-compensation --config config/training/cldyn_real.yaml
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fusion_perception.checkpoint import CheckpointError, check_finite, load_checkpoint
from fusion_perception.compensation import (
    Compensation,
    DownstreamDetector,
    consumer_image,
    luminance,
    save_compensation,
)
from fusion_perception.engine import select_device
from fusion_perception.model.compensation import CompensationConfig, CompensationNet
from fusion_perception.schema import apply_overrides, build, read_yaml_mapping
from fusion_training.config import load_training_config
from fusion_training.data_loading import build_datasets, build_loaders
from fusion_training.distributed import DistInfo
from fusion_training.run_state import seed_everything

__all__ = ["CLDyNConfig", "CLDyNConfigError", "load_cldyn_config", "reward_penalty", "train"]

LOG_NAME = "compensation_log.csv"


class CLDyNConfigError(ValueError):
    """A compensation-training value that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class CLDyNConfig:
    """A compensation training run (the YAML keys; paths relative to the working directory).

    fusion_checkpoint: the frozen fusion network. downstream_checkpoint: the frozen consumer
    (a single-camera detector, `fusion_perception.compensation.DownstreamDetector`).
    data_config: the training config whose dataset and augmentation feed the run.
    penalty: δ of the reward–penalty loss. lr, weight_decay: AdamW (the seed: 1e-2, 1e-4);
    gradients are clipped at 1. output: the compensation file written at the end; half: its
    weights (and the consumer's) stored as float16, half the size.
    """

    fusion_checkpoint: str
    downstream_checkpoint: str
    data_config: str
    output: str = "runs/cldyn/compensation.pt"
    half: bool = True
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-2
    weight_decay: float = 1e-4
    penalty: float = 5.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    compensation: CompensationConfig = field(default_factory=CompensationConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")


def load_cldyn_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CLDyNConfig:
    """Read, override (dotted keys) and validate a compensation YAML; errors name the key."""
    path = Path(path)
    data = read_yaml_mapping(path, "compensation config", CLDyNConfigError)
    try:
        data = apply_overrides(data, CLDyNConfig, overrides or {}, CLDyNConfigError)
        return build(CLDyNConfig, data, CLDyNConfigError)
    except CLDyNConfigError as error:
        raise CLDyNConfigError(f"{path}: {error}") from None


def reward_penalty(compensated: Tensor, plain: Tensor, penalty: float) -> Tensor:
    """``L_c + δ·ReLU(L_c − L_u)``: the task loss, and a penalty where compensating hurt it."""
    return compensated + penalty * F.relu(compensated - plain.detach())


def _loader(cfg: CLDyNConfig, input_size: tuple[int, int], rotated: bool, device: torch.device):
    data = load_training_config(
        cfg.data_config,
        {
            "input_size": list(input_size),
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "workers": 0,
            "augment.options.dropout_probability": 0.0,
            "dataset.val": None,
        },
    )
    train, _, names, _ = build_datasets(data, rotated)
    loader, sampler, _ = build_loaders(data, train, None, rotated, DistInfo(), device)
    return loader, sampler, names


def train(cfg: CLDyNConfig) -> tuple[Path, list[dict[str, float]]]:
    """Train, write ``cfg.output`` (+ its per-step CSV beside it); returns both."""
    from tqdm import tqdm

    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    fusion_ckpt = load_checkpoint(cfg.fusion_checkpoint)
    downstream_ckpt = load_checkpoint(cfg.downstream_checkpoint)
    fusion = fusion_ckpt.build_model(device).requires_grad_(False)
    rotated = fusion_ckpt.model_config.detection_head.rotated
    if downstream_ckpt.model_config.detection_head.rotated != rotated:
        raise CLDyNConfigError("downstream_checkpoint: its box type differs from the fusion's")
    loader, sampler, names = _loader(cfg, fusion_ckpt.input_size, rotated, device)
    if tuple(downstream_ckpt.class_names) != tuple(names):
        raise CLDyNConfigError(
            f"downstream_checkpoint: classes {downstream_ckpt.class_names} differ from the "
            f"data's {list(names)} (data_config: {cfg.data_config})"
        )
    compensation = Compensation.fresh(
        cfg.compensation, downstream_ckpt, fusion_ckpt.fingerprint(), device
    )
    net = compensation.net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log: list[dict[str, float]] = []
    bar = tqdm(total=cfg.steps, desc="compensation", disable=not cfg.progress)
    started, step, epoch = time.monotonic(), 0, 0
    while step < cfg.steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            if step >= cfg.steps:
                break
            row = _step(batch, fusion, compensation, optimizer, cfg.penalty, device)
            log.append({"step": step, **row})
            step += 1
            bar.update(1)
            bar.set_postfix(task=f"{row['task_compensated']:.3f}", plain=f"{row['task_plain']:.3f}")
        epoch += 1
    bar.close()
    compensation.provenance = {
        "fusion_checkpoint": str(cfg.fusion_checkpoint),
        "downstream_checkpoint": str(cfg.downstream_checkpoint),
        "config": {**asdict(cfg), "compensation": asdict(cfg.compensation)},
        "train_s": time.monotonic() - started,
    }
    net.eval()
    try:
        check_finite(net.state_dict())
    except CheckpointError as error:
        raise FloatingPointError(f"compensation: training diverged ({error})") from None
    path = save_compensation(compensation, cfg.output, cfg.half)
    with (path.parent / LOG_NAME).open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    return path, log


def _step(
    batch: dict[str, Any],
    fusion: torch.nn.Module,
    compensation: Compensation,
    optimizer: torch.optim.Optimizer,
    penalty: float,
    device: torch.device,
) -> dict[str, float]:
    rgb = batch["rgb"].to(device)
    thermal = batch["thermal"].to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    downstream: DownstreamDetector = compensation.downstream
    with torch.no_grad():
        fused = fusion(rgb, thermal)["fused"]
        plain_out, task = downstream.run(consumer_image(fused, rgb))
        plain = downstream.loss(plain_out, targets)
    correction = compensation.net(fused, luminance(rgb), thermal, task)
    out, _ = downstream.run(consumer_image(CompensationNet.apply(fused, correction), rgb))
    compensated = downstream.loss(out, targets)
    loss = reward_penalty(compensated, plain, penalty)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"compensation: non-finite loss {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(compensation.net.parameters(), 1.0)
    optimizer.step()
    return {
        "loss": loss.item(),
        "task_plain": plain.item(),
        "task_compensated": compensated.item(),
        "correction_abs": correction.detach().abs().mean().item(),
    }
