"""M3FD (TarDAL, CVPR 2022): registered visible/infrared pairs with VOC XML horizontal boxes.

Layout: ``root/Vis/<stem>.png``, ``root/Ir/<stem>.png``, ``root/Annotation/<stem>.xml``: the
release's ``M3FD_Detection/`` folder. The folder above it (the unpacked release, beside
``M3FD_Fusion/``) works too; ``M3FD_Fusion/`` alone has no annotations and is refused naming the
folder to pass. TarDAL's prepared copy (``root/ir/``, ``root/vi/``, ``root/labels/<stem>.txt`` with
YOLO lines ``class cx cy w h`` normalised to [0, 1], class indices in TarDAL's order
People, Car, Bus, Lamp, Motorcycle, Truck) is read as well; its ``meta/train.txt`` and
``meta/val.txt`` can be given as ``split_file``.

There is no official split: give ``split_file`` (stems one per line) or a seeded random ``split``
by ``train_ratio``. Class order differs between repositories; ``classes`` sets it (default
People, Car, Bus, Motorcycle, Lamp, Truck) and may select a subset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from fusion_perception.image_files import index_images

from .base import (
    PairedDetectionDataset,
    Record,
    Transform,
    check_inside,
    class_key,
    missing_from_split,
    pair_stems,
    paired_size,
    require_pair,
    select_classes,
    split_stems,
    xyxy_to_boxes,
)
from .files import DatasetError, find_dir, read_split_file
from .thermal import ThermalSpec
from .voc import voc_boxes

_LOG = logging.getLogger(__name__)
# Label order of TarDAL's YOLO files (its loader/m3fd.py); not the order of M3FD.CLASSES.
TARDAL_CLASSES = ("People", "Car", "Bus", "Lamp", "Motorcycle", "Truck")


class M3FD(PairedDetectionDataset):
    """M3FD detection pairs; horizontal boxes. See the module docstring for the layouts.

    ``layout`` is "m3fd" (Vis/, Ir/, Annotation/) or "tardal" (ir/, vi/, labels/); ``folder`` is
    the folder the pairs were read from (``root`` or its ``M3FD_Detection/``).
    """

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
        self.folder, self.layout = _locate(Path(root))
        if self.layout == "tardal":
            vis, ir = find_dir(self.folder, "vi"), find_dir(self.folder, "ir")
            self._labels_dir = find_dir(self.folder, "labels")
        else:
            vis, ir = find_dir(self.folder, "Vis"), find_dir(self.folder, "Ir")
            self._labels_dir = find_dir(self.folder, "Annotation", "Annotations")
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
        self._finish(self.folder)

    def _record(
        self, stem: str, rgb: Path | None, thermal: Path | None, vis: Path, ir: Path
    ) -> Record:
        rgb, thermal = require_pair(stem, rgb, thermal, vis, ir)
        size = paired_size(rgb, thermal)
        if self.layout == "tardal":
            boxes, labels, dropped = self._tardal_labels(self._labels_dir / f"{stem}.txt", size)
        else:
            known = {class_key(c) for c in self.CLASSES}
            boxes, labels, dropped = voc_boxes(
                self._labels_dir / f"{stem}.xml", size, self._index_of, known, self._tolerance
            )
        self.dropped_objects.update(dropped)
        return Record(stem, rgb, thermal, size, boxes, labels)

    def _tardal_labels(
        self, path: Path, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Boxes [N, 5], labels [N] and dropped counts from one TarDAL YOLO label file."""
        if not path.is_file():
            raise DatasetError(path, "label file not found")
        width, height = size
        xyxy, labels = [], []
        dropped = {"class not selected": 0}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            tokens = line.split()
            if not tokens:
                continue
            what = f"line {n}"
            try:
                values = [float(t) for t in tokens]
            except ValueError:
                values = []
            if len(values) != 5 or not np.isfinite(values).all():
                raise DatasetError(path, f"{what} must be 'class cx cy w h', got {line.strip()!r}")
            index = values[0]
            if index != int(index) or not 0 <= index < len(TARDAL_CLASSES):
                raise DatasetError(
                    path,
                    f"{what} has class index {tokens[0]!r}; TarDAL's labels use "
                    f"0..{len(TARDAL_CLASSES) - 1} for {list(TARDAL_CLASSES)}",
                )
            cx, cy = values[1] * width, values[2] * height
            w, h = values[3] * width, values[4] * height
            if w <= 0 or h <= 0:
                raise DatasetError(path, f"{what} has an empty box (w={values[3]}, h={values[4]})")
            corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
            corners = check_inside(corners, size, self._tolerance, path, what)
            label = self._index_of.get(class_key(TARDAL_CLASSES[int(index)]))
            if label is None:
                dropped["class not selected"] += 1
                continue
            xyxy.append(corners.reshape(4))
            labels.append(label)
        dropped = {reason: count for reason, count in dropped.items() if count}
        return xyxy_to_boxes(np.array(xyxy).reshape(-1, 4)), np.array(labels, np.int64), dropped


def _locate(root: Path) -> tuple[Path, str]:
    """(folder holding the pairs, layout) for ``root``, or DatasetError saying what to pass."""
    if not root.is_dir():
        raise DatasetError(root, "dataset root folder not found")
    subdirs = {child.name.lower(): child for child in root.iterdir() if child.is_dir()}
    if "vis" in subdirs:
        if "annotation" not in subdirs and "annotations" not in subdirs:
            raise DatasetError(
                root,
                "has Vis/ but no Annotation/ folder; the release's M3FD_Fusion/ pairs carry no "
                "labels, the annotated ones are in M3FD_Detection/ (Vis/, Ir/, Annotation/)",
            )
        return root, "m3fd"
    if "m3fd_detection" in subdirs:
        folder = subdirs["m3fd_detection"]
        _LOG.info("%s: reading the pairs in %s", root, folder.name)
        return folder, "m3fd"
    if {"ir", "vi", "labels"} <= set(subdirs):
        _LOG.info(
            "%s: TarDAL's prepared layout (ir/, vi/, labels/; YOLO labels in the order %s)",
            root,
            list(TARDAL_CLASSES),
        )
        return root, "tardal"
    if {"ir", "vi"} <= set(subdirs):
        raise DatasetError(
            root,
            "has ir/ and vi/ (TarDAL's prepared layout) but no labels/ folder of YOLO label files",
        )
    if "m3fd_fusion" in subdirs:
        raise DatasetError(
            root,
            "holds M3FD_Fusion/ (pairs without annotations) but no M3FD_Detection/; pass the "
            "release's M3FD_Detection folder (Vis/, Ir/, Annotation/) or the folder above it",
        )
    raise DatasetError(
        root,
        "has no sub-folder named Vis: pass M3FD_Detection/ (Vis/, Ir/, Annotation/) or the "
        "folder above it, or TarDAL's prepared copy (ir/, vi/, labels/)",
    )
