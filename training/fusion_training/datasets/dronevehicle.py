"""DroneVehicle (Sun et al., TCSVT 2022): UAV RGB/infrared pairs with oriented vehicle boxes.

Layout per split (train, val, test): ``root/<split>/<split>img`` (RGB), ``<split>imgr`` (infrared),
``<split>label`` and ``<split>labelr`` (XML per image, for the RGB and the infrared image; they
differ, the infrared ones have more objects). Objects carry ``<polygon>`` x1..y4; a few carry a
``<bndbox>`` instead (used as an axis-aligned polygon); objects with neither are left out and
counted in ``dropped_objects``. Class names include typos: ``feright``, ``feright car``,
``feright_car`` and ``truvk`` map to freight_car and truck. Names that are no class at all (the
released labels contain ``*``, e.g. in train ``13099.xml``, upstream issues #49 and #51) drop that
object only, counted as ``unknown class '*'``; the rest of the image is kept. ``<difficult>``
flags are read into the items' ``difficult`` (VOC evaluation ignores those objects).

A few released images are truncated (``train/trainimg/09012.jpg``, ``train/trainimgr/16009.jpg``);
they raise DatasetError naming the file, or leave their pair out with ``skip_invalid=True``.

Images are 840x712 with a 100-pixel white border around the 640x512 content. With
``remove_border=True`` (default) the border is cropped, boxes are shifted by -border, clipped to
the content and refit along their orientation; boxes keeping less than ``min_visible`` of their
area are dropped (counted as 'mostly in the border').
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from fusion_perception.image_files import index_images

from .base import (
    PairedDetectionDataset,
    Record,
    Transform,
    check_inside,
    class_key,
    pair_stems,
    paired_size,
    require_pair,
    select_classes,
)
from .files import DatasetError, find_dir
from .geometry import affine_boxes, polygons_to_boxes
from .thermal import ThermalSpec
from .voc import number, object_name, read_xml, resolve_class

_POLYGON_TAGS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")


class DroneVehicle(PairedDetectionDataset):
    """DroneVehicle pairs of one split with oriented boxes from the RGB or infrared labels."""

    CLASSES = ("car", "truck", "bus", "van", "freight_car")
    ALIASES: ClassVar[dict[str, str]] = {
        "feright": "freight_car",
        "feright car": "freight_car",
        "freight": "freight_car",
        "truvk": "truck",
    }

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        labels: str = "ir",
        remove_border: bool = True,
        border: int = 100,
        min_visible: float = 0.5,
        classes: Sequence[str] = CLASSES,
        thermal_normalization: ThermalSpec = None,
        transform: Transform | None = None,
        skip_invalid: bool = False,
        bounds_tolerance: float = 2.0,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if labels not in ("rgb", "ir"):
            raise ValueError(
                f"labels must be 'rgb' or 'ir' (which modality's label files to use), got {labels!r}"
            )
        if int(border) != border or border < 0:
            raise ValueError(f"border must be a non-negative integer, got {border!r}")
        if not 0.0 <= min_visible <= 1.0:
            raise ValueError(f"min_visible must be in [0, 1], got {min_visible!r}")
        self._index_of = select_classes(classes, self.CLASSES)
        super().__init__(classes, True, thermal_normalization, transform, skip_invalid)
        self._known = {class_key(c) for c in self.CLASSES}
        self._aliases = {class_key(k): class_key(v) for k, v in self.ALIASES.items()}
        self._border = int(border) if remove_border else 0
        self._min_visible = float(min_visible)
        self._tolerance = float(bounds_tolerance)
        split_dir = find_dir(Path(root), split)
        rgb_dir, ir_dir = find_dir(split_dir, f"{split}img"), find_dir(split_dir, f"{split}imgr")
        self._labels_dir = find_dir(
            split_dir, f"{split}label" if labels == "rgb" else f"{split}labelr"
        )
        for stem, rgb, thermal in pair_stems(index_images(rgb_dir), index_images(ir_dir)):
            self._add(stem, partial(self._record, stem, rgb, thermal, rgb_dir, ir_dir))
        self._finish(Path(root))

    def _record(
        self, stem: str, rgb: Path | None, thermal: Path | None, rgb_dir: Path, ir_dir: Path
    ) -> Record:
        rgb, thermal = require_pair(stem, rgb, thermal, rgb_dir, ir_dir)
        width, height = size = paired_size(rgb, thermal)
        label_path = self._labels_dir / f"{stem}.xml"
        dropped: Counter[str] = Counter()  # counted only once the pair is valid
        polygons, labels, difficult = self._polygons(label_path, size, dropped)
        boxes = polygons_to_boxes(polygons)
        b = self._border
        crop = None
        if b:
            if width <= 2 * b or height <= 2 * b:
                raise DatasetError(
                    rgb, f"image {width}x{height} is too small to remove a {b}-pixel border"
                )
            shift = np.array([[1.0, 0.0, -b], [0.0, 1.0, -b]])
            content = (0.0, 0.0, float(width - 2 * b), float(height - 2 * b))
            boxes, keep = affine_boxes(
                boxes, shift, content, rotated=True, min_visible=self._min_visible
            )
            if not keep.all():
                dropped["mostly in the border"] += int((~keep).sum())
            labels, difficult = labels[keep], difficult[keep]
            crop = (b, b, width - b, height - b)
        self.dropped_objects.update(dropped)
        return Record(stem, rgb, thermal, size, boxes, labels, crop=crop, difficult=difficult)

    def _polygons(
        self, path: Path, size: tuple[int, int], dropped: Counter[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Polygons [N, 4, 2] in raw-image pixels, labels [N] and difficult flags [N] of the
        selected classes; objects left out are counted in ``dropped`` by reason."""
        root = read_xml(path)
        polygons, labels, difficult = [], [], []
        for i, obj in enumerate(root.iter("object")):
            name = object_name(obj, path, i)
            what = f"object {i} ({name})"
            canonical = self._aliases.get(class_key(name), name)
            if class_key(canonical) not in self._known:
                dropped[f"unknown class {name!r}"] += 1  # e.g. '*': the object, not the image
                continue
            label = resolve_class(canonical, self._index_of, self._known, path, what)
            polygon = _object_polygon(obj, path, what)
            if polygon is None:
                dropped["no polygon or bndbox"] += 1
                continue
            polygon = check_inside(polygon, size, self._tolerance, path, what)
            if abs(_shoelace(polygon)) < 1e-6:
                raise DatasetError(path, f"{what} has a degenerate polygon {polygon.tolist()}")
            if label is None:
                dropped["class not selected"] += 1
                continue
            polygons.append(polygon)
            labels.append(label)
            difficult.append(_difficult(obj, path, what))
        return (
            np.array(polygons, np.float64).reshape(-1, 4, 2),
            np.array(labels, np.int64),
            np.array(difficult, bool),
        )


def _difficult(obj: ET.Element, path: Path, what: str) -> bool:
    """The object's ``<difficult>`` flag (absent or empty: not difficult)."""
    text = (obj.findtext("difficult") or "0").strip() or "0"
    if text not in ("0", "1"):
        raise DatasetError(path, f"{what} has <difficult> {text!r}; expected 0 or 1")
    return text == "1"


def _object_polygon(obj: ET.Element, path: Path, what: str) -> np.ndarray | None:
    polygon = obj.find("polygon")
    if polygon is not None:
        values = [number(polygon, tag, path, what) for tag in _POLYGON_TAGS]
        return np.reshape(values, (4, 2))
    box = obj.find("bndbox")
    if box is not None:
        x0, y0, x1, y1 = (number(box, tag, path, what) for tag in ("xmin", "ymin", "xmax", "ymax"))
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return None


def _shoelace(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
