"""A dataset scored against a checkpoint whose class names are spelled differently (LLVIP's
person as a checkpoint's People): names matched once, by name or synonym."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from fusion_training.datasets.base import class_key, match_class_names

__all__ = ["NamedAs", "named_as"]

log = logging.getLogger(__name__)


class NamedAs(Dataset):
    """A dataset whose class names are spelled as the checkpoint's (``aliases``: dataset name ->
    checkpoint name, for names that differ beyond case and '_'), e.g. LLVIP's person as People."""

    def __init__(self, dataset: Dataset, class_names: Sequence[str], aliases: dict[str, str]):
        self.dataset, self.class_names, self.aliases = dataset, tuple(class_names), aliases
        self.rotated = getattr(dataset, "rotated", False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[index]


def named_as(dataset: Dataset, checkpoint_classes: Sequence[str]) -> Dataset:
    """``dataset`` with its classes matched to the checkpoint's by name or synonym
    (fusion_training.datasets.base.CLASS_SYNONYMS)."""
    names = list(dataset.class_names)
    try:
        matched = match_class_names(names, checkpoint_classes, "checkpoint's classes")
    except ValueError as error:
        raise ValueError(f"the dataset's {error}") from None
    aliases = {n: m for n, m in matched.items() if class_key(n) != class_key(m)}
    if not aliases:
        return dataset
    for name, target in aliases.items():
        log.info("scoring the dataset's class %r as the checkpoint's %r", name, target)
    return NamedAs(dataset, [matched[n] for n in names], aliases)
