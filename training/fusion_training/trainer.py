"""`Trainer(config).fit()`: end-to-end UniFusOD training with UnityGrad (or a baseline method).

Output directory (rank 0 writes it)::

    config.yaml        the resolved training config
    last.pt            checkpoint (fusion_perception.checkpoint format) after every epoch / at stop
    best.pt            the checkpoint with the best ``eval.best_metric`` so far
    last_state.pt      resume state: optimizer, scheduler, epoch, step, RNG, multitask-method state
    train_log.csv      one row per step: losses, alpha, per-task gradient norms, cosine, lr, time,
                       the premise diagnostics (EMA cosine, shared/head gradient ratios, clip factor)
    eval_log.csv       one row per evaluation
    tensorboard/       the same scalars for TensorBoard
    mtl_summary.json   the multitask method's run summary (`MultiTaskMethod.summary`), also logged

Gradient step: the multitask method backpropagates both task losses and clips ``grad_clip``
inside itself (``mtl.clip``: by default the shared parameters' gradient only, as Nash-MTL does;
heads unclipped), so the engine's own all-parameter clip is off. Exception: float16 AMP (weighted
sum only) clips all parameters together in the engine, after the GradScaler unscales. For
adaptive methods the detection loss of a batch without objects (no box in any image whose
``labelled`` is true) is handed to the method detached: that task is left out of the solve for
that step (see `fusion_training.mtl`).

Reproducibility: the model is initialised from ``seed``; each epoch's sample order comes from a
`DistributedSampler` seeded with ``seed`` (one process = one replica), and each training item is
augmented with a generator seeded by (seed, epoch, index). An item therefore does not depend on
workers, processes or restarts, and ``fit(resume=True)`` continues exactly where ``last_state.pt``
left off, also in the middle of an epoch.

Distributed: run under ``torchrun``; the process group uses nccl on CUDA and gloo on CPU, and
every rank trains its own shard (see `fusion_training.engine` for how gradients are averaged).
Evaluation and checkpoints happen on rank 0; the output directory must be reachable by every rank
to resume.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from fusion_perception.checkpoint import CheckpointError, load_checkpoint
from fusion_perception.model import TASKS, ModelConfig, build_model
from fusion_training.config import TrainingConfig
from fusion_training.data_loading import build_datasets, build_loaders
from fusion_training.distributed import DistInfo, init_distributed
from fusion_training.engine import (
    AmpSettings,
    EvalSettings,
    evaluate,
    train_one_epoch,
)
from fusion_training.losses import LossOutput, UniFusODLoss
from fusion_training.mtl import MultiTaskMethod, build_method
from fusion_training.run_log import RunLogger, write_mtl_summary
from fusion_training.run_state import (
    BEST,
    LAST,
    LAST_STATE,
    RunSaver,
    Trainables,
    as_saved,
    load_run_state,
    seed_everything,
)
from fusion_training.tardal import TargetAwareLoss
from fusion_training.tsjnet import SemanticGuidanceLoss

__all__ = ["ExcludeObjectless", "FitResult", "Trainer", "batch_has_objects"]

log = logging.getLogger(__name__)

CONFIG = "config.yaml"


# ----------------------------------------------------------------------------- objectless batches


def batch_has_objects(targets) -> bool:
    """Whether the batch has a positive detection target: a box in an image whose ``labelled``
    is true (an unlabelled, fusion-only image carries no detection signal)."""
    return any(bool(t.get("labelled", True)) and t["boxes"].shape[0] > 0 for t in targets)


class ExcludeObjectless:
    """Training criterion for adaptive methods: on a batch without objects the detection task
    loss is detached, so the method leaves detection out of that step's solve (its focal loss on
    negatives alone has a tiny shared gradient, which would blow alpha_det up). ``terms`` (the
    logged losses) are unchanged."""

    def __init__(self, criterion: UniFusODLoss) -> None:
        self.criterion = criterion

    def __getattr__(self, name: str) -> Any:
        if "criterion" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["criterion"], name)

    def __call__(self, model, out, rgb, thermal, targets) -> LossOutput:
        loss = self.criterion(model, out, rgb, thermal, targets)
        if batch_has_objects(targets):
            return loss
        tasks = {**loss.tasks, "detection": loss.tasks["detection"].detach()}
        return LossOutput(tasks=tasks, terms=loss.terms)


@dataclass(frozen=True)
class FitResult:
    """Where training stopped; paths are None on ranks other than 0 or when not written."""

    step: int
    epoch: int
    metrics: dict[str, float]
    best_value: float | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None


class Trainer:
    """Trains one `TrainingConfig`; ``fit(resume=False)`` runs it and returns a `FitResult`.

    After ``fit`` the trained network is ``trainer.model`` (bare, not DDP-wrapped) and the
    process's rank is ``trainer.rank``.
    """

    def __init__(self, config: TrainingConfig) -> None:
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.config = config
        self.out_dir = Path(config.output_dir)
        self.model: torch.nn.Module | None = None
        self.rank = 0

    # -- set-up
    def _method(self, core: torch.nn.Module, clip: bool = True) -> MultiTaskMethod:
        """The configured method, bound to the model's shared parameter names; with ``clip`` it
        clips ``grad_clip`` itself (``mtl.clip``)."""
        mtl = self.config.mtl
        kwargs = dict(mtl.options)
        if mtl.update_every is not None:
            kwargs["update_every"] = mtl.update_every
        method = build_method(mtl.method, TASKS, **kwargs)
        shared = {id(p) for p in core.shared_parameters()}
        try:
            method.bind([(n, p) for n, p in core.named_parameters() if id(p) in shared])
        except ValueError as error:
            raise ValueError(f"mtl.options: {error}") from None
        if clip:
            method.set_clip(self.config.grad_clip, mtl.clip)
        return method

    def _optimizer(self, model: torch.nn.Module):
        opt, sched = self.config.optimizer, self.config.scheduler
        cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
        optimizer = cls(
            model.parameters(), lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay
        )
        if sched.name == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, sched.step_size, sched.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 1.0)
        return optimizer, scheduler

    # -- main entry
    def fit(self, resume: bool = False) -> FitResult:
        """Train until ``epochs`` or ``max_steps``; with ``resume`` continue from ``last_state.pt``."""
        cfg = self.config
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        info, device, created = init_distributed(cfg.device)
        self.rank = info.rank
        try:
            return self._fit(info, device, resume)
        finally:
            if created:
                dist.destroy_process_group()

    def _fit(self, info: DistInfo, device: torch.device, resume: bool) -> FitResult:
        cfg = self.config
        model_cfg = cfg.model_config()
        rotated = model_cfg.detection_head.rotated
        train, val, class_names, thermal_spec = build_datasets(cfg, rotated)
        model_cfg = model_cfg.with_overrides({"detection_head.num_classes": len(class_names)})
        train_loader, sampler, val_loader = build_loaders(cfg, train, val, rotated, info, device)
        seed_everything(cfg.seed)  # identical initial weights on every rank and every run
        core = build_model(model_cfg).to(device)
        if cfg.init_weights is not None and not resume:
            _init_weights(core, model_cfg, class_names, cfg.init_weights)
            if info.main:
                log.info("weights initialised from %s", cfg.init_weights)
        self.model = core
        optimizer, scheduler = self._optimizer(core)
        criterion = UniFusODLoss(cfg.loss_weights())
        if cfg.tardal.enabled:
            criterion = TargetAwareLoss(criterion, cfg.tardal, device)
        if cfg.tsjnet.enabled:
            criterion = SemanticGuidanceLoss(criterion, cfg.tsjnet, len(class_names), device)
        amp = AmpSettings(cfg.amp and device.type == "cuda", getattr(torch, cfg.amp_dtype))
        scaler = (
            torch.amp.GradScaler("cuda") if amp.enabled and amp.dtype == torch.float16 else None
        )
        # the method clips inside itself; gradients scaled by a GradScaler can only be clipped
        # after unscaling, i.e. in the engine, all parameters together
        method = self._method(core, clip=scaler is None)
        engine_clip = cfg.grad_clip if scaler is not None else None
        if scaler is not None and cfg.grad_clip is not None and info.main:
            log.info("float16 AMP: grad_clip clips all parameters together (mtl.clip ignored)")
        train_criterion = ExcludeObjectless(criterion) if method.adaptive else criterion
        if cfg.amp and device.type != "cuda" and info.main:
            log.info("amp: autocast is only used on CUDA; training in float32 on %s", device)

        parts = Trainables(optimizer, scheduler, method, scaler, criterion)
        position = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "last_eval_step": None}
        best = {"value": None, "step": None}
        if resume:
            state = load_run_state(cfg, core, model_cfg, parts)
            position = {k: state[k] for k in position}
            best = state["best"]
        elif (self.out_dir / LAST_STATE).is_file():
            raise ValueError(
                f"output_dir: {self.out_dir} already holds a run ({LAST_STATE}); resume it "
                "(--resume) or choose another output directory"
            )
        if info.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with (self.out_dir / CONFIG).open("w", encoding="utf-8") as stream:
                yaml.safe_dump(cfg.to_dict(), stream, sort_keys=False)
        model = core
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            model = DistributedDataParallel(core, device_ids=ids)
        run_log = RunLogger(
            self.out_dir, info.main, cfg.log_every, position["step"] if resume else None
        )
        saver = RunSaver(cfg, core, model_cfg, class_names, thermal_spec, info, best, parts)
        eval_settings = EvalSettings(
            cfg.eval.score_threshold,
            cfg.eval.nms_threshold,
            cfg.eval.max_detections,
            tuple(cfg.eval.fusion_metrics),
            cfg.eval.fusion_images,
        )

        def run_eval(epoch: int, step: int) -> dict[str, float]:
            if val_loader is None:
                return {}
            start = time.perf_counter()
            metrics = evaluate(
                core, criterion, val_loader, device, class_names, eval_settings, amp, cfg.progress
            )
            run_log.evaluation(epoch, step, metrics)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            log.info("eval after step %d (%.1f s): %s", step, time.perf_counter() - start, shown)
            return metrics

        step, epoch = position["step"], position["epoch"]
        batch_in_epoch, last_eval_step = position["batch_in_epoch"], position["last_eval_step"]
        steps_per_epoch = len(sampler.base) // cfg.batch_size
        metrics: dict[str, float] = {}

        def save_state() -> None:
            """Checkpoint the loop's current position (read when called, not when defined)."""
            saver.save(step, epoch, batch_in_epoch, last_eval_step, metrics)

        try:
            while epoch < cfg.epochs and (cfg.max_steps is None or step < cfg.max_steps):
                sampler.set_epoch(epoch, start=batch_in_epoch * cfg.batch_size)
                start, before = time.perf_counter(), step
                step = train_one_epoch(
                    model,
                    train_criterion,
                    method,
                    optimizer,
                    train_loader,
                    device,
                    epoch,
                    step,
                    amp=amp,
                    scaler=scaler,
                    grad_clip=engine_clip,
                    max_steps=cfg.max_steps,
                    on_step=run_log.step,
                    progress=cfg.progress and info.main,
                )
                batch_in_epoch += step - before
                finished = batch_in_epoch >= steps_per_epoch
                if info.main:
                    means = ", ".join(f"{k} {v:.4g}" for k, v in run_log.epoch_means().items())
                    log.info(
                        "epoch %d %s at step %d (%.1f s): %s",
                        epoch,
                        "done" if finished else "stopped",
                        step,
                        time.perf_counter() - start,
                        means,
                    )
                if finished:
                    scheduler.step()
                    epoch, batch_in_epoch = epoch + 1, 0
                    if val is not None and epoch % cfg.eval.every == 0:
                        metrics, last_eval_step = run_eval(epoch - 1, step), step
                save_state()
                if not finished:
                    break
            if val is not None and last_eval_step != step:
                metrics, last_eval_step = run_eval(epoch, step), step
                save_state()
        finally:
            run_log.close()
        if info.main:
            write_mtl_summary(method, self.out_dir)
        last, best_path = self.out_dir / LAST, self.out_dir / BEST
        return FitResult(
            step=step,
            epoch=epoch,
            metrics=metrics,
            best_value=saver.best["value"],
            last_checkpoint=last if info.main and last.is_file() else None,
            best_checkpoint=best_path if info.main and saver.best["step"] is not None else None,
        )


def _init_weights(
    core: torch.nn.Module, model_cfg: ModelConfig, class_names: list[str], path: str
) -> None:
    """Start from a checkpoint's weights (fine-tuning); it must be the same network and classes."""
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(f"init_weights: {error}") from None
    if list(checkpoint.class_names) != list(class_names):
        raise ValueError(
            f"init_weights: {path} detects {list(checkpoint.class_names)}, "
            f"the run trains {list(class_names)}"
        )
    if checkpoint.model_config != as_saved(model_cfg):
        raise ValueError(f"init_weights: {path} holds another network than the run's model config")
    core.load_state_dict(checkpoint.state_dict)
