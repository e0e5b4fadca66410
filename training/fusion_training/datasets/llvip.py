"""LLVIP (ICCV 2021): low-light visible/infrared pedestrian pairs with VOC XML boxes.

Layout: ``root/visible/{train,test}/<stem>.jpg``, ``root/infrared/{train,test}/<stem>.jpg`` and
``root/Annotations/<stem>.xml`` (one folder for both splits). One class: person.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fusion_perception.image_files import index_images

from .base import (
    PairedDetectionDataset,
    Record,
    Transform,
    pair_stems,
    paired_size,
    require_pair,
    select_classes,
)
from .files import DatasetError, find_dir
from .thermal import ThermalSpec
from .voc import voc_boxes


class LLVIP(PairedDetectionDataset):
    """LLVIP pairs of one split ('train', 'test' or 'all'); horizontal person boxes."""

    CLASSES = ("person",)

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        thermal_normalization: ThermalSpec = None,
        transform: Transform | None = None,
        skip_invalid: bool = False,
        bounds_tolerance: float = 2.0,
    ) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        self._index_of = select_classes(self.CLASSES, self.CLASSES)
        super().__init__(self.CLASSES, False, thermal_normalization, transform, skip_invalid)
        root = Path(root)
        visible, infrared = find_dir(root, "visible"), find_dir(root, "infrared")
        self._labels_dir = find_dir(root, "Annotations", "Annotation")
        self._tolerance = float(bounds_tolerance)
        seen: dict[str, Path] = {}
        for part in ("train", "test") if split == "all" else (split,):
            vis_dir, ir_dir = visible / part, infrared / part
            for stem, rgb, thermal in pair_stems(index_images(vis_dir), index_images(ir_dir)):
                self._add(stem, partial(self._record, stem, rgb, thermal, vis_dir, ir_dir, seen))
        self._finish(root)

    def _record(
        self,
        stem: str,
        rgb: Path | None,
        thermal: Path | None,
        vis: Path,
        ir: Path,
        seen: dict[str, Path],
    ) -> Record:
        rgb, thermal = require_pair(stem, rgb, thermal, vis, ir)
        if stem in seen:
            raise DatasetError(rgb, f"stem {stem!r} also appears as {seen[stem]}")
        seen[stem] = rgb
        size = paired_size(rgb, thermal)
        boxes, labels, dropped = voc_boxes(
            self._labels_dir / f"{stem}.xml",
            size,
            self._index_of,
            set(self._index_of),
            self._tolerance,
        )
        self.dropped_objects.update(dropped)
        return Record(stem, rgb, thermal, size, boxes, labels)
