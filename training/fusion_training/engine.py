"""One training epoch and one evaluation pass (the torchvision ``references/detection`` split).

`train_one_epoch` runs forward, both task losses, the multitask method's backward
(`fusion_training.mtl`), the cross-rank gradient average, clipping and the optimizer step per
batch; it stops with `NonFiniteLossError` (message = the loss dict) on a non-finite loss.
`evaluate` computes validation losses, detection AP and fusion metrics on the bare model.

Distributed training: per-task gradients come from ``torch.autograd.grad``, which bypasses
DistributedDataParallel's all-reduce hooks, so every step runs inside ``ddp.no_sync()`` and
`all_reduce_gradients` averages the final ``.grad`` of every parameter explicitly (one flat
buffer per dtype). Each rank solves its multitask weights on its own batch; the average of those
per-rank updates is what is applied, identically on every rank.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fusion_perception.model import TASKS
from fusion_training.losses import UniFusODLoss
from fusion_training.metrics import evaluate_fusion
from fusion_training.metrics.detection import coco_map, rotated_voc_ap50
from fusion_training.mtl import MultiTaskMethod, StepReport

__all__ = [
    "AmpSettings",
    "EvalSettings",
    "NonFiniteLossError",
    "StepLog",
    "all_reduce_gradients",
    "evaluate",
    "train_one_epoch",
    "unwrap",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message carries the step and every loss term."""


@dataclass(frozen=True)
class AmpSettings:
    """Autocast for the forward pass: only on CUDA, in ``dtype`` (losses always run in float32)."""

    enabled: bool = False
    dtype: torch.dtype = torch.bfloat16

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.enabled or device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)


@dataclass(frozen=True)
class EvalSettings:
    """Post-processing thresholds and which fusion metrics to average over how many images."""

    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    fusion_metrics: tuple[str, ...] = ("EN", "SD", "MI", "SSIM")
    fusion_images: int = 16


@dataclass(frozen=True)
class StepLog:
    """What one optimizer step did: ``step`` counts completed steps (1 after the first)."""

    step: int
    epoch: int
    losses: dict[str, float]
    report: StepReport
    lr: float
    grad_norm: float
    seconds: float

    def scalars(self) -> dict[str, float]:
        """Flat {name: value}: ``loss/<term>``, the method's alpha/grad_norm/cos, lr, timing."""
        out = {f"loss/{k}": v for k, v in self.losses.items()}
        out.update(self.report.scalars())
        out["recomputed"] = float(self.report.recomputed)
        out["lr"] = self.lr
        out["grad_norm_total"] = self.grad_norm
        out["step_time_s"] = self.seconds
        return out


def unwrap(model: nn.Module) -> nn.Module:
    """The bare UniFusOD inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_gradients(parameters: Iterable[Tensor]) -> None:
    """Average ``.grad`` over all ranks, in place; a missing grad counts as zeros (and is set)."""
    world = dist.get_world_size()
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        for g, chunk in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
            g.copy_(chunk.view_as(g))


def _to_device(batch: Mapping[str, Any], device: torch.device):
    rgb = batch["rgb"].to(device, non_blocking=True)
    thermal = batch["thermal"].to(device, non_blocking=True)
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    return rgb, thermal, targets


def _check_finite(
    values: Mapping[str, float], device: torch.device, distributed: bool, where: str
) -> None:
    """Raise `NonFiniteLossError` on every rank when any rank's loss is NaN or inf (all ranks
    must stop together, or the others would hang in the next all-reduce)."""
    finite = all(math.isfinite(v) for v in values.values())
    everywhere = finite
    if distributed:
        flag = torch.tensor([1.0 if finite else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        everywhere = bool(flag.item() > 0)
    if not finite:
        raise NonFiniteLossError(
            f"Loss is {values['total']}, stopping training at {where}: {values}"
        )
    if not everywhere:
        raise NonFiniteLossError(f"another rank's loss is not finite, stopping training at {where}")


def train_one_epoch(
    model: nn.Module,
    criterion: UniFusODLoss,
    method: MultiTaskMethod,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device,
    epoch: int,
    step: int,
    *,
    amp: AmpSettings | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    max_steps: int | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    progress: bool = False,
) -> int:
    """Train on ``loader`` (collated batches) from global step ``step``; returns the new step.

    Stops early when ``max_steps`` optimizer steps have been taken in total. ``model`` may be
    wrapped in DistributedDataParallel (then gradients are averaged over ranks explicitly).
    ``scaler`` (float16 AMP) is only valid with a weighted-sum method: the task losses are scaled
    and the gradients unscaled before clipping.
    """
    amp = amp or AmpSettings()
    core = unwrap(model)
    distributed = isinstance(model, DistributedDataParallel)
    shared = core.shared_parameters()
    task_params = {task: core.task_parameters(task) for task in TASKS}
    params = [p for p in model.parameters() if p.requires_grad]
    no_sync = model.no_sync if distributed else contextlib.nullcontext
    if max_steps is not None and step >= max_steps:
        return step
    model.train()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False)
    for batch in bar:
        start = time.perf_counter()
        rgb, thermal, targets = _to_device(batch, device)
        with no_sync():
            with amp.autocast(device):
                out = model(rgb, thermal)
            loss = criterion(core, out, rgb, thermal, targets)
            values = {k: float(v.detach()) for k, v in loss.terms.items()}
            where = f"step {step} (epoch {epoch}, images {batch.get('image_ids')})"
            _check_finite(values, device, distributed, where)
            optimizer.zero_grad(set_to_none=True)
            tasks = loss.tasks
            if scaler is not None:
                tasks = {k: scaler.scale(v) for k, v in tasks.items()}
            report = method.combine(tasks, shared, step, task_params=task_params)
        if distributed:
            all_reduce_gradients(params)
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            params, grad_clip if grad_clip is not None else math.inf
        )
        lr = optimizer.param_groups[0]["lr"]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        bar.set_postfix(loss=f"{values['total']:.4f}", step=step)
        if on_step is not None:
            on_step(StepLog(step, epoch, values, report, lr, float(norm), seconds))
        if max_steps is not None and step >= max_steps:
            break
    bar.close()
    return step


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: UniFusODLoss,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device,
    class_names: Sequence[str],
    settings: EvalSettings | None = None,
    amp: AmpSettings | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Validation metrics of the bare model over ``loader``.

    Returns ``loss/total``, ``loss/fusion``, ``loss/detection`` (image-weighted means);
    ``mAP50`` and ``mAP50_95`` (COCO, horizontal heads) or ``AP50`` (VOC all-point, exact polygon
    IoU, rotated heads), computed in network-input pixels; and ``fusion/<name>`` averaged over
    the first ``settings.fusion_images`` images (textbook conventions, fused vs RGB and thermal).
    """
    settings = settings or EvalSettings()
    amp = amp or AmpSettings()
    core = unwrap(model)
    was_training = core.training
    core.eval()
    rotated = core.detection_head.rotated
    predictions: list[dict[str, Tensor]] = []
    targets_all: list[dict[str, Tensor]] = []
    loss_sums = dict.fromkeys(("total", "fusion", "detection"), 0.0)
    fusion_values: dict[str, list[float]] = {m: [] for m in settings.fusion_metrics}
    images = 0
    try:
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            rgb, thermal, targets = _to_device(batch, device)
            with amp.autocast(device):
                out = core(rgb, thermal)
            out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
            terms = criterion(core, out, rgb, thermal, targets).terms
            count = rgb.shape[0]
            for key in loss_sums:
                loss_sums[key] += float(terms[key]) * count
            detections = core.postprocess(
                out, settings.score_threshold, settings.nms_threshold, settings.max_detections
            )
            predictions += [{k: v.cpu() for k, v in d.items()} for d in detections]
            targets_all += [{k: v.cpu() for k, v in t.items()} for t in targets]
            for i in range(count):
                if images + i >= settings.fusion_images or not fusion_values:
                    break
                scores = evaluate_fusion(
                    out["fused"][i, 0].clamp(0, 1).cpu().numpy(),
                    rgb[i].permute(1, 2, 0).cpu().numpy(),
                    thermal[i, 0].cpu().numpy(),
                    metrics=list(settings.fusion_metrics),
                )
                for name, value in scores.items():
                    fusion_values[name].append(value)
            images += count
    finally:
        core.train(was_training)
    if images == 0:
        raise ValueError("evaluate: the validation loader yielded no images")
    metrics = {f"loss/{k}": v / images for k, v in loss_sums.items()}
    if rotated:
        metrics["AP50"] = float(rotated_voc_ap50(predictions, targets_all, class_names)["AP50"])
    else:
        coco = coco_map(predictions, targets_all, class_names)
        metrics["mAP50"] = float(coco["mAP50"])
        metrics["mAP50_95"] = float(coco["mAP50_95"])
    for name, values in fusion_values.items():
        if values:
            metrics[f"fusion/{name}"] = float(np.mean(values))
    return metrics
