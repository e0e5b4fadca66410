"""``build_dataset(format, root, **options)`` and the batch ``collate`` for DataLoaders."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import Item
from .dronevehicle import DroneVehicle
from .folder import PairedFolder
from .llvip import LLVIP
from .m3fd import M3FD
from .mixture import MixtureDataset
from .synthetic_scenes import SyntheticDataset

FORMATS: dict[str, type[Dataset]] = {
    "m3fd": M3FD,
    "dronevehicle": DroneVehicle,
    "llvip": LLVIP,
    "folder": PairedFolder,
    "synthetic": SyntheticDataset,
    "mixture": MixtureDataset,
}
_ALIASES = {"paired_folder": "folder", "drone_vehicle": "dronevehicle"}
_ROOTLESS = ("synthetic", "mixture")


def canonical_format(format: Any) -> str:
    """The FORMATS key of a format name (case and aliases resolved), or ValueError."""
    key = _ALIASES.get(str(format).lower(), str(format).lower())
    if key not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; choose from {sorted(FORMATS)}")
    return key


def accepted_options(cls: type[Dataset]) -> list[str]:
    """Keyword options ``build_dataset`` passes to a format's class (``length`` for synthetic)."""
    return [
        n
        for n, p in inspect.signature(cls).parameters.items()
        if p.kind is p.KEYWORD_ONLY or n == "length"
    ]


def build_dataset(format: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """A dataset of ``format`` (m3fd, dronevehicle, llvip, folder, synthetic, mixture) at ``root``.

    ``options`` are the keyword arguments of the format's class (e.g. ``split``, ``transform``,
    ``skip_invalid``); ``synthetic`` and ``mixture`` take no root (a mixture's ``parts`` name
    their own, see :class:`MixtureDataset`). Unknown formats or options raise ValueError.
    """
    key = canonical_format(format)
    cls = FORMATS[key]
    accepted = accepted_options(cls)
    takes_any = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values()
    )  # the mixture checks the options it hands on itself
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"unknown option(s) {unknown} for dataset format {key!r}; accepted: {accepted}"
        )
    if key in _ROOTLESS:
        if root is not None:
            raise ValueError(f"dataset format {key!r} takes no root, got root={root!r}")
        return cls(**options)
    if root is None:
        raise ValueError(f"dataset format {key!r} needs a root folder, got root=None")
    return cls(root, **options)


def collate(batch: Sequence[Item]) -> dict[str, Any]:
    """Stack items of one size into model tensors.

    Returns ``rgb`` float32 [B, 3, H, W] in [0, 1], ``thermal`` float32 [B, 1, H, W] in [0, 1],
    ``targets`` a list of {"boxes": float32 [N_i, 5], "labels": int64 [N_i], "labelled": bool
    0-dim tensor, and ``semantic`` int64 [H, W] for items that carry a class map} and
    ``image_ids``. ``labelled`` is a tensor so targets move to a device as a
    whole; an item without the key counts as labelled. Tensors are on the CPU; the trainer
    moves them to its device.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    shapes = {(item["rgb"].shape, item["thermal"].shape) for item in batch}
    if len(shapes) != 1:
        sizes = {item["image_id"]: (item["rgb"].shape[:2], item["thermal"].shape) for item in batch}
        raise ValueError(
            f"batch items differ in size (H, W) {sizes}; resize or letterbox them to one input size "
            "(fusion_training.augment) before batching"
        )
    ((rgb_shape, thermal_shape),) = shapes
    if len(rgb_shape) != 3 or rgb_shape[2] != 3 or thermal_shape != rgb_shape[:2]:
        raise ValueError(
            f"items need rgb HxWx3 and thermal HxW of the same size, got {rgb_shape} and {thermal_shape}"
        )
    rgb = torch.from_numpy(np.stack([item["rgb"] for item in batch])).permute(0, 3, 1, 2)
    thermal = torch.from_numpy(
        np.stack([item["thermal"] for item in batch]).astype(np.float32, copy=False)
    )
    targets = [
        {
            "boxes": torch.as_tensor(item["boxes"], dtype=torch.float32).reshape(-1, 5),
            "labels": torch.as_tensor(item["labels"], dtype=torch.int64).reshape(-1),
            "labelled": torch.tensor(bool(item.get("labelled", True))),
            **(
                {"semantic": torch.from_numpy(item["semantic"].astype(np.int64))}
                if "semantic" in item
                else {}
            ),
        }
        for item in batch
    ]
    return {
        "rgb": rgb.float().div_(255.0).contiguous(),
        "thermal": thermal[:, None].contiguous(),
        "targets": targets,
        "image_ids": [item["image_id"] for item in batch],
    }
