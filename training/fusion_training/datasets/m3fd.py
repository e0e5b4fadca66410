"""M3FD (TarDAL, CVPR 2022): registered visible/infrared pairs with VOC XML horizontal boxes.

Layout: ``root/Vis/<stem>.png``, ``root/Ir/<stem>.png``, ``root/Annotation/<stem>.xml``. There is
no official split: give ``split_file`` (stems one per line) or a seeded random ``split`` by
``train_ratio``. Class order differs between repositories; ``classes`` sets it (default
People, Car, Bus, Motorcycle, Lamp, Truck) and may select a subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from .base import (
    PairedDetectionDataset,
    Record,
    Transform,
    class_key,
    missing_from_split,
    pair_stems,
    paired_size,
    require_pair,
    select_classes,
    split_stems,
)
from .files import find_dir, index_images, read_split_file
from .thermal import ThermalSpec
from .voc import voc_boxes


class M3FD(PairedDetectionDataset):
    """M3FD detection pairs; horizontal boxes. See the module docstring for the layout."""

    CLASSES = ("People", "Car", "Bus", "Motorcycle", "Lamp", "Truck")

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        split_file: str | Path | None = None,
        train_ratio: float = 0.8,
        seed: int = 0,
        classes: Sequence[str] = CLASSES,
        thermal_normalization: ThermalSpec = None,
        transform: Transform | None = None,
        skip_invalid: bool = False,
        bounds_tolerance: float = 2.0,
    ) -> None:
        self._index_of = select_classes(classes, self.CLASSES)
        super().__init__(classes, False, thermal_normalization, transform, skip_invalid)
        root = Path(root)
        vis, ir = find_dir(root, "Vis"), find_dir(root, "Ir")
        self._labels_dir = find_dir(root, "Annotation", "Annotations")
        self._tolerance = float(bounds_tolerance)
        entries = pair_stems(index_images(vis), index_images(ir))
        if split_file is not None:
            split_path = Path(split_file)
            listed = read_split_file(split_path)
            present = {stem for stem, _, _ in entries}
            for stem in listed:
                if stem not in present:
                    self._add(stem, partial(missing_from_split, split_path, stem, vis))
            chosen = set(listed)
        else:
            chosen = split_stems([stem for stem, _, _ in entries], split, train_ratio, seed)
        for stem, rgb, thermal in entries:
            if stem in chosen:
                self._add(stem, partial(self._record, stem, rgb, thermal, vis, ir))
        self._finish(root)

    def _record(
        self, stem: str, rgb: Path | None, thermal: Path | None, vis: Path, ir: Path
    ) -> Record:
        rgb, thermal = require_pair(stem, rgb, thermal, vis, ir)
        size = paired_size(rgb, thermal)
        known = {class_key(c) for c in self.CLASSES}
        boxes, labels, dropped = voc_boxes(
            self._labels_dir / f"{stem}.xml", size, self._index_of, known, self._tolerance
        )
        self.dropped_objects.update(dropped)
        return Record(stem, rgb, thermal, size, boxes, labels)
