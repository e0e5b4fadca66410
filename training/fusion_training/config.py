"""The training YAML schema: frozen dataclasses, validated once at load with errors naming the key.

``load_training_config(path, overrides)`` reads a YAML file (see ``config/training/*.yaml``),
applies dotted-key overrides (``{"mtl.method": "weighted_sum"}``, what the CLI's options and
``--set`` produce), checks every key, type and range, and cross-checks the sections against
each other and against the model config. Errors are `TrainingConfigError` naming the dotted key
(``optimizer.lr``, ``augment.options.hue``).

Paths: ``model`` is resolved against the YAML file's folder (configs travel with the repository);
``dataset.root`` and ``output_dir`` are relative to the working directory (they belong to the run).
`TrainingConfig.to_dict` gives the resolved config as plain types; it is saved beside the
checkpoints and in their provenance.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusion_perception.model import ModelConfig, ModelConfigError, load_model_config
from fusion_perception.schema import (
    apply_overrides,
    build,
    qualified,
    read_yaml_mapping,
    to_plain,
)
from fusion_training.losses import LossWeights
from fusion_training.tardal import TarDALConfig
from fusion_training.tsjnet import TSJNetConfig

__all__ = [
    "AugmentSection",
    "DatasetSection",
    "EvalSection",
    "MTLSection",
    "OptimizerSection",
    "SchedulerSection",
    "TrainingConfig",
    "TrainingConfigError",
    "available_metrics",
    "load_training_config",
]


class TrainingConfigError(ValueError):
    """A training configuration value that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class DatasetSection:
    """Which data to train and validate on.

    format: a `fusion_training.datasets.FORMATS` name (m3fd, dronevehicle, llvip, folder, synthetic,
    mixture). root: dataset folder (null for synthetic and mixture). options: keyword options of
    the format's class for both splits; train / val: options for one split only (merged over
    ``options``); val null = no validation. A mixture lists its datasets in ``options.parts``
    (see `fusion_training.datasets.MixtureDataset`); its other options and train / val are handed
    to the parts that accept them, and the top-level ``thermal_normalization`` is required (it is
    recorded in the checkpoint, not applied: each part keeps its own).
    """

    format: str = "synthetic"
    root: str | None = None
    options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    val: dict | None = None


@dataclass(frozen=True)
class AugmentSection:
    """Training augmentation: ``options`` are `fusion_training.augment.AugmentConfig` fields
    (output_size and rotated come from input_size and the model); evaluation only letterboxes."""

    enabled: bool = True
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MTLSection:
    """Multitask method (`fusion_training.mtl.METHODS`), its update_every (null = the method's
    default) and its other keyword options (GradNorm's ``layer``: dotted name prefix(es) of the
    shared parameters where it measures norms, e.g. ``fra``; every method's ``ema_beta``: decay
    of the gradient EMAs of the premise diagnostics, per measurement step).

    clip: what ``grad_clip`` clips, inside the method: ``shared`` (the shared gradient only,
    heads unclipped, as Nash-MTL does), ``each`` (the shared gradient and each head's gradient on
    its own) or ``global`` (all parameters together: the old behaviour, which lets alpha-scaled
    head gradients shrink the shared step; for reproducing earlier runs).
    """

    method: str = "unitygrad"
    update_every: int | None = None
    options: dict = field(default_factory=dict)
    clip: Literal["shared", "each", "global"] = "shared"


@dataclass(frozen=True)
class OptimizerSection:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclass(frozen=True)
class SchedulerSection:
    """``step``: multiply the learning rate by gamma every step_size epochs; ``constant``: never."""

    name: Literal["step", "constant"] = "step"
    step_size: int = 10
    gamma: float = 0.5


@dataclass(frozen=True)
class EvalSection:
    """Validation every ``every`` epochs (and after the last step).

    best_metric: the value that picks ``best.pt``: ``mAP50``/``mAP50_95`` (horizontal boxes) or
    ``AP50`` (rotated), ``fusion/<name>`` for a name in fusion_metrics, or ``loss/total``,
    ``loss/fusion``, ``loss/detection``; best_mode: whether larger (max) or smaller (min) is better.
    fusion_metrics / fusion_images: `evaluate_fusion` metrics averaged over the first images.
    batch_size: null = the training batch size.
    """

    every: int = 1
    best_metric: str = "mAP50"
    best_mode: Literal["max", "min"] = "max"
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    fusion_metrics: tuple[str, ...] = ("EN", "SD", "MI", "SSIM")
    fusion_images: int = 16
    batch_size: int | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """One training run. See ``config/training/*.yaml`` for commented examples.

    model: model YAML path; model_overrides: dotted `ModelConfig` overrides (num_classes is set
    from ``classes``). classes: label names (null = the dataset's). input_size: [width, height]
    the network trains at. thermal_normalization: the scheme applied to raw thermal and recorded in
    the checkpoint (null = the dataset's default). loss: `fusion_training.losses.LossWeights`
    fields. tardal: TarDAL's target-aware pixel and adversarial terms in the fusion loss
    (`fusion_training.tardal.TarDALConfig`; off by default). tsjnet: TSJNet's semantic guidance
    of the fusion path by a segmenter trained on the synthetic class maps
    (`fusion_training.tsjnet.TSJNetConfig`; off by default). epochs / max_steps: stop at
    whichever comes first. amp: autocast on CUDA (ignored on
    CPU) in ``amp_dtype``; float16 needs a GradScaler, so only the weighted_sum method allows it.
    grad_clip: max gradient norm (null = off), applied by the multitask method as ``mtl.clip``
    says (default: the shared parameters' gradient only). deterministic: deterministic kernels.
    log_every: write a CSV/TensorBoard row every N steps. init_weights: a checkpoint whose
    weights start the run (fine-tuning, e.g. the shipped model on your own bags); its model
    config and class names must match this run's; optimizer and schedule start fresh.
    """

    model: str
    name: str = "run"
    model_overrides: dict = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    input_size: tuple[int, ...] = (640, 512)
    thermal_normalization: dict | None = None
    dataset: DatasetSection = field(default_factory=DatasetSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    mtl: MTLSection = field(default_factory=MTLSection)
    loss: dict = field(default_factory=dict)
    tardal: TarDALConfig = field(default_factory=TarDALConfig)
    tsjnet: TSJNetConfig = field(default_factory=TSJNetConfig)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    workers: int = 0
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    grad_clip: float | None = 1.0
    seed: int = 0
    deterministic: bool = False
    eval: EvalSection = field(default_factory=EvalSection)
    output_dir: str = "runs/run"
    device: str = "auto"
    log_every: int = 1
    progress: bool = True
    init_weights: str | None = None

    # -- derived views (validated at load, so these cannot fail afterwards)
    def model_config(self) -> ModelConfig:
        """The model config with overrides and num_classes applied."""
        overrides = dict(self.model_overrides)
        if self.classes is not None:
            overrides["detection_head.num_classes"] = len(self.classes)
        return load_model_config(self.model).with_overrides(overrides)

    def loss_weights(self) -> LossWeights:
        """The ``loss`` section as `fusion_training.losses.LossWeights`."""
        return build(LossWeights, self.loss, TrainingConfigError, "loss.")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) that `from_dict` reads back."""
        return to_plain(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: str | Path | None = None
    ) -> TrainingConfig:
        """Validate a mapping; a relative ``model`` path is resolved against ``base_dir``."""
        cfg = build(cls, data, TrainingConfigError)
        model = Path(cfg.model)
        if not model.is_absolute() and base_dir is not None:
            model = Path(base_dir) / model
        cfg = dataclasses.replace(cfg, model=str(model.resolve()))
        _check(cfg)
        return cfg


def load_training_config(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> TrainingConfig:
    """Read, override (dotted keys) and validate a training YAML file."""
    path = Path(path)
    data = read_yaml_mapping(path, "training config", TrainingConfigError)
    try:
        data = apply_overrides(data, TrainingConfig, overrides or {}, TrainingConfigError)
        return TrainingConfig.from_dict(data, base_dir=path.parent)
    except TrainingConfigError as error:
        raise TrainingConfigError(f"{path}: {error}") from None


def _require(condition: bool, key: str, value: Any, expectation: str) -> None:
    if not condition:
        raise TrainingConfigError(f"{key} must be {expectation}, got {value!r}")


# ----------------------------------------------------------------------------- cross-checks


def _check(cfg: TrainingConfig) -> None:
    """Ranges and consistency between sections, the model config and the other modules."""
    model_cfg = _check_model(cfg)
    _check_numbers(cfg)
    _check_dataset(cfg)
    _check_augment(cfg, model_cfg)
    _check_mtl(cfg)
    cfg.loss_weights()
    if cfg.thermal_normalization is not None:
        from fusion_training.datasets.thermal import build_normalizer

        try:
            build_normalizer(cfg.thermal_normalization)
        except (TypeError, ValueError) as error:
            raise TrainingConfigError(f"thermal_normalization: {error}") from None
    _check_eval(cfg, model_cfg)


def _check_model(cfg: TrainingConfig) -> ModelConfig:
    if not Path(cfg.model).is_file():
        raise TrainingConfigError(f"model: model config file not found: {cfg.model}")
    if cfg.classes is not None:
        _require(
            len(cfg.classes) >= 1
            and all(cfg.classes)
            and len(set(cfg.classes)) == len(cfg.classes),
            "classes",
            list(cfg.classes),
            "unique non-empty names",
        )
    try:
        model_cfg = cfg.model_config()
    except ModelConfigError as error:
        key = "model_overrides" if cfg.model_overrides else "model"
        raise TrainingConfigError(f"{key}: {error}") from None
    _require(
        len(cfg.input_size) == 2 and all(v > 0 for v in cfg.input_size),
        "input_size",
        list(cfg.input_size),
        "[width, height] > 0",
    )
    stride = max(model_cfg.detection_head.strides)
    _require(
        all(v % stride == 0 for v in cfg.input_size),
        "input_size",
        list(cfg.input_size),
        f"multiples of the model's largest stride {stride}",
    )
    return model_cfg


def _check_numbers(cfg: TrainingConfig) -> None:
    opt, sched = cfg.optimizer, cfg.scheduler
    _require(math.isfinite(opt.lr) and opt.lr > 0, "optimizer.lr", opt.lr, "> 0")
    _require(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, ">= 0")
    _require(
        len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas),
        "optimizer.betas",
        list(opt.betas),
        "two values in [0, 1)",
    )
    _require(sched.step_size >= 1, "scheduler.step_size", sched.step_size, ">= 1")
    _require(0 < sched.gamma <= 1, "scheduler.gamma", sched.gamma, "in (0, 1]")
    _require(cfg.epochs >= 1, "epochs", cfg.epochs, ">= 1")
    _require(
        cfg.max_steps is None or cfg.max_steps >= 1, "max_steps", cfg.max_steps, ">= 1 or null"
    )
    _require(cfg.batch_size >= 1, "batch_size", cfg.batch_size, ">= 1")
    _require(cfg.workers >= 0, "workers", cfg.workers, ">= 0")
    _require(cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip", cfg.grad_clip, "> 0 or null")
    _require(cfg.log_every >= 1, "log_every", cfg.log_every, ">= 1")
    _require(bool(cfg.name), "name", cfg.name, "a non-empty string")
    _require(bool(cfg.output_dir), "output_dir", cfg.output_dir, "a non-empty path")
    device = cfg.device
    _require(
        device in {"auto", "cpu", "cuda"} or device.startswith("cuda:"),
        "device",
        device,
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
    )
    if cfg.amp and cfg.amp_dtype == "float16":
        _require(
            cfg.mtl.method == "weighted_sum",
            "amp_dtype",
            cfg.amp_dtype,
            f"bfloat16 with mtl.method {cfg.mtl.method!r} (float16 needs a GradScaler, which "
            "would unscale per-task-balanced gradients twice)",
        )


def _check_dataset(cfg: TrainingConfig) -> None:
    from fusion_training.datasets import FORMATS

    ds = cfg.dataset
    _require(ds.format in FORMATS, "dataset.format", ds.format, f"one of {sorted(FORMATS)}")
    if ds.format == "mixture":
        _check_mixture(cfg)
        return
    accepted = set(inspect.signature(FORMATS[ds.format]).parameters) - {"self", "root"}
    for section in ("options", "train", "val"):
        options = getattr(ds, section) or {}
        for key in options:
            _require(
                key in accepted and key != "transform",
                f"dataset.{section}.{key}",
                options[key],
                f"an option of dataset format {ds.format!r} ({sorted(accepted - {'transform'})})",
            )
    if ds.format == "synthetic":
        _require(ds.root is None, "dataset.root", ds.root, "null for the synthetic format")
    else:
        _require(ds.root is not None, "dataset.root", ds.root, f"set for format {ds.format!r}")


def _check_mixture(cfg: TrainingConfig) -> None:
    """A mixture's parts (errors name ``dataset.options.parts[i]...``) and what it hands on."""
    from fusion_training.datasets.mixture import NOT_FORWARDED, parse_parts, part_accepts

    ds = cfg.dataset
    _require(ds.root is None, "dataset.root", ds.root, "null for a mixture (each part has a root)")
    try:
        specs = parse_parts(ds.options.get("parts"))
    except ValueError as error:
        raise TrainingConfigError(f"dataset.options.{error}") from None
    offered = set().union(*(part_accepts(spec.format) for spec in specs)) - set(NOT_FORWARDED)
    for section in ("options", "train", "val"):
        options = getattr(ds, section) or {}
        for key in options:
            if section == "options" and key == "parts":
                continue
            if key in NOT_FORWARDED:
                expectation = f"set per part (dataset.options.parts[i].options.{key})"
            else:
                expectation = (
                    "an option of at least one part's format, to hand on to those parts "
                    f"({sorted(offered)})"
                )
            _require(key in offered, f"dataset.{section}.{key}", options[key], expectation)
    _require(
        cfg.thermal_normalization is not None,
        "thermal_normalization",
        cfg.thermal_normalization,
        "set with dataset.format mixture: the scheme the checkpoint records for inference "
        "(each part normalizes its own thermal)",
    )


def _check_augment(cfg: TrainingConfig, model_cfg: ModelConfig) -> None:
    from fusion_training.augment import AugmentConfig

    names = {f.name for f in dataclasses.fields(AugmentConfig)} - {"output_size", "rotated"}
    for key in cfg.augment.options:
        _require(
            key in names,
            f"augment.options.{key}",
            cfg.augment.options[key],
            f"an AugmentConfig field ({sorted(names)})",
        )
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.options.items()}
    try:
        AugmentConfig(
            output_size=(cfg.input_size[1], cfg.input_size[0]),
            rotated=model_cfg.detection_head.rotated,
            **options,
        )
    except (TypeError, ValueError) as error:
        raise qualified("augment.options.", error, names, TrainingConfigError) from None


def _check_mtl(cfg: TrainingConfig) -> None:
    from fusion_perception.model import TASKS
    from fusion_training.mtl import METHODS, build_method

    mtl = cfg.mtl
    _require(mtl.method in METHODS, "mtl.method", mtl.method, f"one of {sorted(METHODS)}")
    accepted = set(inspect.signature(METHODS[mtl.method]).parameters) - {"self", "tasks"}
    accepted -= {"update_every", "weights", "layer_params"}  # layer_params: tensors; use layer
    for key in mtl.options:
        _require(
            key in accepted,
            f"mtl.options.{key}",
            mtl.options[key],
            f"an option of method {mtl.method!r} ({sorted(accepted)})",
        )
    kwargs = dict(mtl.options)
    if mtl.update_every is not None:
        kwargs["update_every"] = mtl.update_every
    try:
        build_method(mtl.method, TASKS, **kwargs)
    except (TypeError, ValueError) as error:
        key = "mtl.update_every" if "update_every" in str(error) else "mtl.options"
        raise TrainingConfigError(f"{key}: {error}") from None


def _check_eval(cfg: TrainingConfig, model_cfg: ModelConfig) -> None:
    from fusion_training.metrics import METRIC_NAMES

    ev = cfg.eval
    _require(ev.every >= 1, "eval.every", ev.every, ">= 1")
    _require(
        0.0 <= ev.score_threshold <= 1.0, "eval.score_threshold", ev.score_threshold, "in [0, 1]"
    )
    _require(0.0 < ev.nms_threshold <= 1.0, "eval.nms_threshold", ev.nms_threshold, "in (0, 1]")
    _require(ev.max_detections >= 1, "eval.max_detections", ev.max_detections, ">= 1")
    _require(ev.fusion_images >= 0, "eval.fusion_images", ev.fusion_images, ">= 0")
    _require(ev.batch_size is None or ev.batch_size >= 1, "eval.batch_size", ev.batch_size, ">= 1")
    bad = [m for m in ev.fusion_metrics if m not in METRIC_NAMES]
    _require(not bad, "eval.fusion_metrics", list(ev.fusion_metrics), f"names from {METRIC_NAMES}")
    known = available_metrics(cfg, model_cfg)
    _require(ev.best_metric in known, "eval.best_metric", ev.best_metric, f"one of {known}")


def available_metrics(cfg: TrainingConfig, model_cfg: ModelConfig) -> list[str]:
    """Names `evaluate` reports for this config (what eval.best_metric may choose from)."""
    detection = ["AP50"] if model_cfg.detection_head.rotated else ["mAP50", "mAP50_95"]
    fusion = [f"fusion/{m}" for m in cfg.eval.fusion_metrics] if cfg.eval.fusion_images else []
    return [*detection, *fusion, "loss/total", "loss/fusion", "loss/detection"]
