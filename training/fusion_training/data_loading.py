"""The trainer's data: datasets from the config, augmented items keyed by (epoch, index), and
loaders whose sample order survives a resume.

Each training item is augmented with a generator seeded by (seed, epoch, index) and each epoch's
order comes from a `DistributedSampler` seeded with ``seed``, so an item depends neither on the
workers nor on the processes nor on restarts.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from fusion_perception.thermal import make_normalizer
from fusion_training.augment import AugmentConfig, PairedAugment
from fusion_training.config import TrainingConfig
from fusion_training.datasets import FORMATS, build_dataset, collate
from fusion_training.datasets.synthetic_scenes import DEFAULT_THERMAL
from fusion_training.datasets.thermal import build_normalizer
from fusion_training.distributed import DistInfo

log = logging.getLogger(__name__)


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


def build_datasets(
    cfg: TrainingConfig, rotated: bool
) -> tuple[Dataset, Dataset | None, tuple[str, ...], dict]:
    """The training and validation splits, their class names and the thermal normalization
    the checkpoint records; errors name the config key."""
    ds = cfg.dataset
    accepted = set(inspect.signature(FORMATS[ds.format]).parameters)
    width, height = cfg.input_size
    defaults: dict[str, Any] = {"rotated": rotated, "width": width, "height": height}
    if cfg.classes is not None:
        defaults["classes"] = list(cfg.classes)
    mixture = ds.format == "mixture"
    # a mixture's parts keep their own normalization; the config's is only recorded
    if cfg.thermal_normalization is not None and not mixture:
        defaults["thermal_normalization"] = build_normalizer(cfg.thermal_normalization).to_dict()
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
    return train, val, names, thermal_spec(cfg, train)


def thermal_spec(cfg: TrainingConfig, dataset: Dataset) -> dict[str, Any]:
    """The normalization recorded in the checkpoint: the config's, else the dataset's."""
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


def build_loaders(
    cfg: TrainingConfig,
    train: Dataset,
    val: Dataset | None,
    rotated: bool,
    info: DistInfo,
    device: torch.device,
) -> tuple[DataLoader, EpochSampler, DataLoader | None]:
    """Augmenting training loader (this rank's shard, resumable order), its sampler, and the
    evaluation loader (rank 0 only)."""
    width, height = cfg.input_size
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.options.items()}
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
