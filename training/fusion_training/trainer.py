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

import csv
import inspect
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter

from fusion_perception.checkpoint import (
    CheckpointError,
    load_checkpoint,
    new_checkpoint,
    save_checkpoint,
)
from fusion_perception.engine import select_device
from fusion_perception.imaging import make_normalizer
from fusion_perception.model import TASKS, ModelConfig, build_model
from fusion_perception.schema import json_safe
from fusion_training.augment import AugmentConfig, PairedAugment
from fusion_training.config import TrainingConfig
from fusion_training.datasets import FORMATS, build_dataset, collate
from fusion_training.datasets.synthetic_scenes import DEFAULT_THERMAL
from fusion_training.datasets.thermal import build_normalizer
from fusion_training.engine import (
    AmpSettings,
    EvalSettings,
    StepLog,
    evaluate,
    train_one_epoch,
)
from fusion_training.losses import LossOutput, UniFusODLoss
from fusion_training.mtl import MultiTaskMethod, build_method

__all__ = [
    "EpochSampler",
    "ExcludeObjectless",
    "FitResult",
    "PreparedDataset",
    "Trainer",
    "batch_has_objects",
    "write_mtl_summary",
]

log = logging.getLogger(__name__)

LAST, BEST, LAST_STATE, CONFIG = "last.pt", "best.pt", "last_state.pt", "config.yaml"
TRAIN_LOG, EVAL_LOG = "train_log.csv", "eval_log.csv"
MTL_SUMMARY = "mtl_summary.json"
STATE_VERSION = 1


# ----------------------------------------------------------------------------- data


class PreparedDataset(Dataset):
    """Items brought to the network input by ``transform`` with a generator seeded by
    (seed, epoch, index). Keys are ``index`` or ``(epoch, index)`` (from `EpochSampler`)."""

    def __init__(self, base: Dataset, transform: PairedAugment, seed: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        return self.transform(self.base[index], rng)


class EpochSampler(Sampler):
    """``(epoch, index)`` keys in the `DistributedSampler` order of an epoch, from ``start`` on
    (``start`` skips samples already trained on before a resume)."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base = base
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in itertools.islice(iter(self.base), self.start, None))

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)


# ----------------------------------------------------------------------------- state helpers


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _method_state(method: MultiTaskMethod) -> dict[str, tuple[str, Any]]:
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


def _load_method_state(method: MultiTaskMethod, state: Mapping[str, tuple[str, Any]]) -> None:
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


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _fmt(stat: Mapping[str, Any] | None, key: str = "mean") -> str:
    value = (stat or {}).get(key)
    return "n/a" if value is None else f"{value:.3g}"


def write_mtl_summary(method: MultiTaskMethod, out_dir: Path) -> dict[str, Any]:
    """Write the method's run summary to ``mtl_summary.json`` and log it (two lines: the
    numbers, and whether Nash's premise held)."""
    summary = json_safe(method.summary())
    with (out_dir / MTL_SUMMARY).open("w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=2)
    pair = next(iter(summary["ema_cosine"]), None)
    tasks = summary["tasks"]
    log.info(
        "mtl summary (%s, %d steps, %d measurements, %d partial): cos %s mean, EMA cos %s last "
        "/ %s min; |g shared|/|g head| %s; alpha %s; clip factor %s mean, clipped %s of steps; "
        "excluded steps %s (%s)",
        summary["method"],
        summary["steps"],
        summary["measurements"],
        summary["partial_measurements"],
        _fmt(summary["cosine"].get(pair)),
        _fmt(summary["ema_cosine"].get(pair), "last"),
        _fmt(summary["ema_cosine"].get(pair), "min"),
        ", ".join(f"{t} {_fmt(summary['shared_to_head_grad_ratio'][t])}" for t in tasks),
        ", ".join(f"{t} {_fmt(summary['alpha'][t])}" for t in tasks),
        _fmt(summary["clip_factor"]),
        "n/a" if summary["clipped_fraction"] is None else f"{summary['clipped_fraction']:.0%}",
        summary["excluded_steps"],
        out_dir / MTL_SUMMARY,
    )
    if summary["premise_conflicting_gradients"] is False:
        log.warning("mtl: %s", summary["premise"])
    else:
        log.info("mtl: %s", summary["premise"])
    return summary


# ----------------------------------------------------------------------------- logging


class RunLogger:
    """Per-step and per-evaluation scalars to CSV and TensorBoard (rank 0 only).

    On resume, rows after ``resume_step`` are dropped from the CSV files (they belong to steps
    that will be trained again) and TensorBoard purges the same steps.
    """

    def __init__(self, out_dir: Path, enabled: bool, log_every: int, resume_step: int | None):
        self.enabled = enabled
        self.log_every = log_every
        self._sums: dict[str, float] = {}
        self._count = 0
        if not enabled:
            return
        self._files = {TRAIN_LOG: out_dir / TRAIN_LOG, EVAL_LOG: out_dir / EVAL_LOG}
        self._columns: dict[str, list[str]] = {}
        for name, path in self._files.items():
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.is_file():
                self._truncate(name, path, resume_step)
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge)

    def _truncate(self, name: str, path: Path, resume_step: int) -> None:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            columns = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r["step"]) <= resume_step]
        self._columns[name] = columns
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, columns)
            writer.writeheader()
            writer.writerows(rows)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self._files[name]
        columns = self._columns.setdefault(name, list(row))
        new = not path.is_file()
        with path.open("a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, columns, restval="", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def step(self, entry: StepLog) -> None:
        for key, value in entry.losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        if not self.enabled or entry.step % self.log_every:
            return
        scalars = entry.scalars()
        self._append(TRAIN_LOG, {"step": entry.step, "epoch": entry.epoch, **scalars})
        for key, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"train/{key}", value, entry.step)

    def epoch_means(self) -> dict[str, float]:
        """Mean of each loss term over the steps since the last call."""
        means = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return means

    def evaluation(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._append(EVAL_LOG, {"step": step, "epoch": epoch, **metrics})
        for key, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"val/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()


# ----------------------------------------------------------------------------- trainer


def _portable_path(path: str) -> str:
    """``path`` relative to the working directory when inside it, so a shipped checkpoint does not
    carry the training machine's folders (the network itself is in the checkpoint's model_config)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
    def _init_distributed(self) -> tuple[_Dist, torch.device, bool]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        spec = self.config.device
        if world <= 1:
            return _Dist(), select_device(spec), False
        info = _Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        device = select_device(spec)
        if device.type == "cuda":
            device = torch.device(
                "cuda", info.local_rank if spec in ("auto", "cuda") else device.index
            )
            torch.cuda.set_device(device)
        created = not dist.is_initialized()
        if created:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return info, device, created

    def _datasets(self, rotated: bool) -> tuple[Dataset, Dataset | None, tuple[str, ...], dict]:
        cfg, ds = self.config, self.config.dataset
        accepted = set(inspect.signature(FORMATS[ds.format]).parameters)
        width, height = cfg.input_size
        defaults: dict[str, Any] = {"rotated": rotated, "width": width, "height": height}
        if cfg.classes is not None:
            defaults["classes"] = list(cfg.classes)
        mixture = ds.format == "mixture"
        # a mixture's parts keep their own normalization; the config's is only recorded
        if cfg.thermal_normalization is not None and not mixture:
            defaults["thermal_normalization"] = build_normalizer(
                cfg.thermal_normalization
            ).to_dict()
        if not mixture:
            defaults = {k: v for k, v in defaults.items() if k in accepted}

        def build(role: str, split_options: Mapping[str, Any]) -> Dataset:
            if mixture:  # each part takes the defaults it accepts
                options = {**ds.options, **split_options, "role": role, "defaults": defaults}
            else:
                options = {**defaults, **ds.options, **split_options}
            return build_dataset(ds.format, ds.root, **options)

        train = build("train", ds.train)
        val = build("val", ds.val) if ds.val is not None else None
        if mixture:
            for split, data in (("train", train), ("val", val)):
                if data is not None:
                    log.info("dataset.%s: mixture of %s", split, data.manifest["parts"])
        names = tuple(train.class_names)
        if cfg.classes is not None and names != tuple(cfg.classes):
            raise ValueError(
                f"classes: config lists {list(cfg.classes)} but dataset format {ds.format!r} at "
                f"{ds.root} has {list(names)}"
            )
        for split, data in (("train", train), ("val", val)):
            if data is None:
                continue
            if bool(data.rotated) != rotated:
                raise ValueError(
                    f"dataset.{split}: boxes are {'rotated' if data.rotated else 'horizontal'} "
                    f"but the model's detection_head.rotated is {rotated}"
                )
            if tuple(data.class_names) != names:
                raise ValueError(
                    f"dataset.val: classes {list(data.class_names)} differ from the training "
                    f"split's {list(names)}"
                )
        return train, val, names, self._thermal_spec(train)

    def _thermal_spec(self, dataset: Dataset) -> dict[str, Any]:
        """The normalization recorded in the checkpoint: the config's, else the dataset's."""
        cfg = self.config
        if cfg.thermal_normalization is not None:
            return build_normalizer(cfg.thermal_normalization).to_dict()
        if cfg.dataset.format == "mixture":
            raise ValueError(
                "thermal_normalization: required with dataset.format mixture; its parts each "
                "normalize thermal their own way, so say which scheme the checkpoint records "
                "(the one the node applies to its camera at inference)"
            )
        if cfg.dataset.format == "synthetic":
            return build_normalizer(DEFAULT_THERMAL).to_dict()
        manifest = getattr(dataset, "manifest", None) or {}
        if manifest.get("thermal_normalization"):
            return build_normalizer(manifest["thermal_normalization"]).to_dict()
        # without a scheme the loaders accept 8-bit thermal only and divide it by 255
        return make_normalizer("fixed_range", lo=0.0, hi=255.0).to_dict()

    def _loaders(self, train: Dataset, val: Dataset | None, rotated: bool, info: _Dist, device):
        cfg = self.config
        width, height = cfg.input_size
        options = {
            k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.options.items()
        }
        train_aug = AugmentConfig(output_size=(height, width), rotated=rotated, **options)
        eval_aug = replace(
            AugmentConfig.evaluation((height, width), rotated, train_aug.letterbox),
            rgb_pad=train_aug.rgb_pad,
            thermal_pad=train_aug.thermal_pad,
        )
        if not cfg.augment.enabled:
            train_aug = eval_aug
        base = DistributedSampler(
            train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
        )
        if len(base) < cfg.batch_size:
            raise ValueError(
                f"batch_size: {cfg.batch_size} is larger than the {len(base)} training images "
                f"per process ({len(train)} in total, {info.world_size} process(es))"
            )
        sampler = EpochSampler(base)
        common = {
            "num_workers": cfg.workers,
            "collate_fn": collate,
            "pin_memory": device.type == "cuda",
            "persistent_workers": cfg.workers > 0,
        }
        train_loader = DataLoader(
            PreparedDataset(train, PairedAugment(train_aug, cfg.seed), cfg.seed),
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            **common,
        )
        val_loader = None
        if val is not None and info.main:
            val_loader = DataLoader(
                PreparedDataset(val, PairedAugment(eval_aug, cfg.seed), cfg.seed),
                batch_size=cfg.eval.batch_size or cfg.batch_size,
                shuffle=False,
                **common,
            )
        return train_loader, sampler, val_loader

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
        info, device, created = self._init_distributed()
        self.rank = info.rank
        try:
            return self._fit(info, device, resume)
        finally:
            if created:
                dist.destroy_process_group()

    def _fit(self, info: _Dist, device: torch.device, resume: bool) -> FitResult:
        cfg = self.config
        model_cfg = cfg.model_config()
        rotated = model_cfg.detection_head.rotated
        train, val, class_names, thermal_spec = self._datasets(rotated)
        model_cfg = model_cfg.with_overrides({"detection_head.num_classes": len(class_names)})
        train_loader, sampler, val_loader = self._loaders(train, val, rotated, info, device)
        _seed_everything(cfg.seed)  # identical initial weights on every rank and every run
        core = build_model(model_cfg).to(device)
        if cfg.init_weights is not None and not resume:
            _init_weights(core, model_cfg, class_names, cfg.init_weights)
            if info.main:
                log.info("weights initialised from %s", cfg.init_weights)
        self.model = core
        optimizer, scheduler = self._optimizer(core)
        criterion = UniFusODLoss(cfg.loss_weights())
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

        position = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "last_eval_step": None}
        best = {"value": None, "step": None}
        if resume:
            state = self._load_state(core, model_cfg, optimizer, scheduler, method, scaler)
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
        saver = _Saver(self, core, model_cfg, class_names, thermal_spec, info, best)
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
            saver.save(
                step,
                epoch,
                batch_in_epoch,
                last_eval_step,
                metrics,
                optimizer,
                scheduler,
                method,
                scaler,
            )

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

    def _load_state(
        self,
        core: torch.nn.Module,
        model_cfg: ModelConfig,
        optimizer: torch.optim.Optimizer,
        scheduler,
        method: MultiTaskMethod,
        scaler: torch.amp.GradScaler | None,
    ) -> dict[str, Any]:
        state_path, ckpt_path = self.out_dir / LAST_STATE, self.out_dir / LAST
        if not state_path.is_file():
            raise FileNotFoundError(
                f"resume: {state_path} not found; nothing to resume in {self.out_dir}"
            )
        # our own file (written by _Saver): it holds numpy RNG state, so not weights_only
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
        if checkpoint.model_config != _as_saved(model_cfg):
            raise ValueError(
                f"resume: {ckpt_path} was trained with another model config than {self.config.model}"
            )
        if state["method"]["name"] != method.name:
            raise ValueError(
                f"mtl.method: {self.config.mtl.method!r} but {state_path} was trained with "
                f"{state['method']['name']!r}"
            )
        core.load_state_dict(checkpoint.state_dict)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _load_method_state(method, state["method"]["state"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        log.info("resumed from %s at step %d (epoch %d)", state_path, state["step"], state["epoch"])
        return state


def _as_saved(model_cfg: ModelConfig) -> ModelConfig:
    """The model config as a checkpoint records it: without the initial backbone weights file
    (see `new_checkpoint`)."""
    return replace(model_cfg, backbone=replace(model_cfg.backbone, weights=None))


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
    if checkpoint.model_config != _as_saved(model_cfg):
        raise ValueError(f"init_weights: {path} holds another network than the run's model config")
    core.load_state_dict(checkpoint.state_dict)


class _Saver:
    """Writes last.pt + last_state.pt (and best.pt when the metric improves) on rank 0."""

    def __init__(self, trainer: Trainer, core, model_cfg, class_names, thermal_spec, info, best):
        self.trainer, self.core, self.model_cfg = trainer, core, model_cfg
        self.class_names, self.thermal_spec, self.info = list(class_names), thermal_spec, info
        self.best = dict(best)

    def _improves(self, metrics: Mapping[str, float]) -> bool:
        ev = self.trainer.config.eval
        value, current = metrics.get(ev.best_metric), self.best["value"]
        if value is None or not math.isfinite(value):
            return False
        return current is None or (value > current if ev.best_mode == "max" else value < current)

    def save(
        self,
        step,
        epoch,
        batch_in_epoch,
        last_eval_step,
        metrics,
        optimizer,
        scheduler,
        method,
        scaler,
    ) -> None:
        info, cfg = self.info, self.trainer.config
        if info.enabled:  # the saved (and evaluated) BatchNorm statistics are rank 0's
            for buffer in self.core.buffers():
                dist.broadcast(buffer, src=0)
        if info.main:
            out = self.trainer.out_dir
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
                "config": {**cfg.to_dict(), "model": _portable_path(cfg.model)},
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
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "method": {"name": method.name, "state": _method_state(method)},
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state(),
            }
            partial = out / (LAST_STATE + ".partial")
            torch.save(state, partial)
            partial.replace(out / LAST_STATE)
        if info.enabled:
            dist.barrier()
