"""A run's saved state: ``last.pt``/``best.pt`` checkpoints and ``last_state.pt`` (optimizer,
scheduler, loop position, RNGs, multitask-method state), written on rank 0 after every epoch and
read back by ``fit(resume=True)``, which then continues exactly where the run stopped, also in the
middle of an epoch."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fusion_perception.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from fusion_perception.model import ModelConfig
from fusion_training.config import TrainingConfig
from fusion_training.mtl import MultiTaskMethod

log = logging.getLogger(__name__)

LAST, BEST, LAST_STATE = "last.pt", "best.pt", "last_state.pt"
STATE_VERSION = 1


def method_state(method: MultiTaskMethod) -> dict[str, tuple[str, Any]]:
    """Everything a multitask method carries between steps (coefficients, last measurement,
    GradNorm's weights and optimizer, PCGrad's generator), tagged by how to restore it."""
    state = {}
    for key, value in vars(method).items():
        # configuration, set from the config at start-up (not restored from the state)
        if key in ("tasks", "update_every", "layer_params", "clip_norm", "clip_mode"):
            continue
        if isinstance(value, torch.optim.Optimizer):
            state[key] = ("optimizer", value.state_dict())
        elif isinstance(value, torch.Tensor):
            state[key] = ("tensor", value.detach().clone())
        elif isinstance(value, np.random.Generator):
            state[key] = ("generator", value.bit_generator.state)
        else:
            state[key] = ("value", value)
    return state


def load_method_state(method: MultiTaskMethod, state: Mapping[str, tuple[str, Any]]) -> None:
    for key, (kind, value) in state.items():
        current = getattr(method, key, None)
        if kind == "optimizer":
            current.load_state_dict(value)
        elif kind == "tensor":
            with torch.no_grad():
                current.copy_(value)
        elif kind == "generator":
            current.bit_generator.state = value
        else:
            setattr(method, key, value)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def as_saved(model_cfg: ModelConfig) -> ModelConfig:
    """The model config as a checkpoint records it: without the initial backbone weights file
    (see `new_checkpoint`)."""
    return replace(model_cfg, backbone=replace(model_cfg.backbone, weights=None))


def portable_path(path: str) -> str:
    """``path`` relative to the working directory when inside it, so a shipped checkpoint does not
    carry the training machine's folders (the network itself is in the checkpoint's model_config)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Trainables:
    """What a run's state holds besides the network: the optimizer and its schedule, the
    multitask method, the float16 GradScaler (or None) and the criterion (TarDAL's critics, when
    it has a ``state_dict``)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    method: MultiTaskMethod
    scaler: torch.amp.GradScaler | None
    criterion: Any

    def criterion_state(self) -> dict[str, Any] | None:
        return self.criterion.state_dict() if hasattr(self.criterion, "state_dict") else None

    def criterion_kind(self) -> str:
        """The criterion's layers, outermost first (e.g. "SemanticGuidanceLoss > UniFusODLoss")."""
        names, layer = [], self.criterion
        while layer is not None:
            names.append(type(layer).__name__)
            layer = getattr(layer, "base", None)
        return " > ".join(names)


def load_run_state(
    config: TrainingConfig, core: torch.nn.Module, model_cfg: ModelConfig, parts: Trainables
) -> dict[str, Any]:
    """Restore a run from ``last_state.pt`` + ``last.pt`` into the model, optimizer, scheduler,
    method, scaler, criterion and RNGs; returns the state (the loop's position). Refuses a state
    that does not belong to this config."""
    optimizer, scheduler, method, scaler = (
        parts.optimizer,
        parts.scheduler,
        parts.method,
        parts.scaler,
    )
    out_dir = Path(config.output_dir)
    state_path, ckpt_path = out_dir / LAST_STATE, out_dir / LAST
    if not state_path.is_file():
        raise FileNotFoundError(f"resume: {state_path} not found; nothing to resume in {out_dir}")
    # our own file (written by RunSaver): it holds numpy RNG state, so not weights_only
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"resume: {state_path} has state version {state.get('version')!r}, "
            f"this trainer reads {STATE_VERSION}"
        )
    checkpoint = load_checkpoint(ckpt_path)
    if checkpoint.provenance.get("step") != state["step"]:
        raise ValueError(
            f"resume: {ckpt_path} is from step {checkpoint.provenance.get('step')} but "
            f"{state_path} from step {state['step']}; the run was interrupted while saving"
        )
    if checkpoint.model_config != as_saved(model_cfg):
        raise ValueError(
            f"resume: {ckpt_path} was trained with another model config than {config.model}"
        )
    if state["method"]["name"] != method.name:
        raise ValueError(
            f"mtl.method: {config.mtl.method!r} but {state_path} was trained with "
            f"{state['method']['name']!r}"
        )
    core.load_state_dict(checkpoint.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    load_method_state(method, state["method"]["state"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    kind = state.get("criterion_kind", "UniFusODLoss")
    if kind != parts.criterion_kind():
        raise ValueError(
            f"tardal.enabled / tsjnet.enabled: {state_path} was trained with the loss {kind}, "
            f"this config makes {parts.criterion_kind()} (their training-only networks differ)"
        )
    if state.get("criterion") is not None:
        parts.criterion.load_state_dict(state["criterion"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d (epoch %d)", state_path, state["step"], state["epoch"])
    return state


class RunSaver:
    """Writes last.pt + last_state.pt (and best.pt when the metric improves) on rank 0."""

    def __init__(
        self,
        config: TrainingConfig,
        core,
        model_cfg,
        class_names,
        thermal_spec,
        info,
        best,
        parts: Trainables,
    ):
        self.config, self.core, self.model_cfg = config, core, model_cfg
        self.class_names, self.thermal_spec, self.info = list(class_names), thermal_spec, info
        self.best = dict(best)
        self.parts = parts

    def _improves(self, metrics: Mapping[str, float]) -> bool:
        ev = self.config.eval
        value, current = metrics.get(ev.best_metric), self.best["value"]
        if value is None or not math.isfinite(value):
            return False
        return current is None or (value > current if ev.best_mode == "max" else value < current)

    def save(
        self, step: int, epoch: int, batch_in_epoch: int, last_eval_step: int | None, metrics
    ) -> None:
        """Checkpoint the loop at this position (``last_eval_step == step``: ``metrics`` are
        this step's evaluation)."""
        info, cfg = self.info, self.config
        parts = self.parts
        if info.enabled:  # the saved (and evaluated) BatchNorm statistics are rank 0's
            for buffer in self.core.buffers():
                dist.broadcast(buffer, src=0)
        if info.main:
            out = Path(self.config.output_dir)
            improved = last_eval_step == step and self._improves(metrics)
            if improved:
                self.best = {"value": float(metrics[cfg.eval.best_metric]), "step": step}
            provenance = {
                "tool": "fusion-train",
                "step": step,
                "epoch": epoch,
                "metrics": dict(metrics) if last_eval_step == step else {},
                "mtl_method": cfg.mtl.method,
                "world_size": info.world_size,
                "torch_version": str(torch.__version__),
                "config": {**cfg.to_dict(), "model": portable_path(cfg.model)},
            }
            checkpoint = new_checkpoint(
                self.core,
                self.model_cfg,
                self.class_names,
                tuple(cfg.input_size),
                self.thermal_spec,
                provenance,
            )
            save_checkpoint(checkpoint, out / LAST)
            if improved:
                save_checkpoint(checkpoint, out / BEST)
            state = {
                "version": STATE_VERSION,
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "last_eval_step": last_eval_step,
                "best": self.best,
                "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(),
                "method": {"name": parts.method.name, "state": method_state(parts.method)},
                "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
                "criterion": parts.criterion_state(),
                "criterion_kind": parts.criterion_kind(),
                "rng": rng_state(),
            }
            partial = out / (LAST_STATE + ".partial")
            torch.save(state, partial)
            partial.replace(out / LAST_STATE)
        if info.enabled:
            dist.barrier()
