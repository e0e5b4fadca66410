"""Synthetic RGB + thermal scenes as a dataset (smoke training, tests, demos without data)."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from fusion_perception.synthetic import THERMAL_RANGE, SceneGenerator

from .base import Item, Transform
from .thermal import ThermalSpec, build_normalizer

DEFAULT_THERMAL = {
    "scheme": "fixed_range",
    "lo": float(THERMAL_RANGE[0]),
    "hi": float(THERMAL_RANGE[1]),
}


class SyntheticDataset(Dataset):
    """``length`` scenes from :class:`fusion_perception.synthetic.SceneGenerator`; item i depends
    only on (seed, i, settings), so it is the same in every epoch, worker and process.

    Thermal is normalized with ``thermal_normalization`` (default: fixed_range over the
    generator's THERMAL_RANGE); the other arguments are the generator's.
    """

    def __init__(
        self,
        length: int = 1000,
        *,
        width: int = 640,
        height: int = 512,
        classes: Sequence[str] = ("person", "car"),
        seed: int = 0,
        night_probability: float = 0.5,
        rotated: bool = False,
        max_objects: int = 8,
        thermal_normalization: ThermalSpec = None,
        transform: Transform | None = None,
    ) -> None:
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.generator = SceneGenerator(
            width,
            height,
            classes=classes,
            seed=seed,
            night_probability=night_probability,
            rotated=rotated,
            max_objects=max_objects,
        )
        self.length = int(length)
        self.class_names = self.generator.classes
        self.rotated = self.generator.rotated
        self.transform = transform
        spec = thermal_normalization if thermal_normalization is not None else DEFAULT_THERMAL
        self._normalizer = build_normalizer(spec)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < self.length:
            raise IndexError(
                f"index {index} out of range for a synthetic dataset of length {self.length}"
            )
        scene = self.generator.sample(index)
        self._normalizer.reset()
        item: Item = {
            "rgb": scene.rgb,
            "thermal": self._normalizer(scene.thermal_raw),
            "boxes": scene.boxes,
            "labels": scene.labels,
            "image_id": f"synthetic_{self.generator.seed}_{index:06d}",
            "labelled": True,
            "semantic": scene.semantic,  # 0 background, k + 1 class k (TSJNet's guidance)
        }
        return self.transform(item) if self.transform is not None else item
