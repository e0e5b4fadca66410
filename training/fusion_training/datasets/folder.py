"""The package's own paired-folder format (also what a rosbag2 recording is turned into).

Layout::

    root/manifest.yaml
    root/rgb/<stem>.{png,jpg,...}        colour images (8-bit)
    root/thermal/<stem>.{png,tif,...}    thermal images: 8-bit, or 16-bit raw counts
    root/labels/<stem>.txt               one file per pair; an empty file means no objects
                                         (with ``unlabelled: fusion_only``: a pair without a
                                         file, or a dataset without labels/, is unannotated)

manifest.yaml::

    classes: [person, car]          # label order (required)
    label_format: yolo              # yolo | dota (required)
    thermal_normalization:          # how raw thermal maps to [0, 1]; required for 16-bit thermal
      scheme: fixed_range           #   (fusion_perception.thermal schemes; to_dict() form works too)
      params: {lo: 7000, hi: 9000}
    unlabelled: error               # optional: what a pair without a label file is (see below)
    splits:                         # optional: split name -> file of stems, relative to root
      train: train.txt
      val: val.txt
    format_version: 1               # optional
    description: free text          # optional

Label formats: ``yolo`` lines ``class_index cx cy w h`` normalised to [0, 1] (horizontal boxes);
``dota`` lines ``x1 y1 x2 y2 x3 y3 x4 y4 class_name [difficult]`` in pixels (oriented boxes; the
``imagesource:`` / ``gsd:`` header lines of DOTA files are skipped).

Unlabelled pairs: ``unlabelled: error`` (the default) makes a missing label file an error, because
a forgotten file would otherwise teach the detector that the pair has no objects.
``unlabelled: fusion_only`` loads such a pair with no boxes and ``labelled: False`` in its item;
the fusion loss trains on it and the detection loss skips it. An empty label file still means
"annotated, no objects" (``labelled: True``). Keep unlabelled pairs out of a split used to pick
checkpoints by mAP.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
    xyxy_to_boxes,
)
from .files import DatasetError, find_dir, read_split_file
from .geometry import polygons_to_boxes
from .thermal import ThermalSpec, build_normalizer

MANIFEST = "manifest.yaml"
LABEL_FORMATS = ("yolo", "dota")
UNLABELLED_POLICIES = ("error", "fusion_only")
_MANIFEST_KEYS = {
    "classes",
    "label_format",
    "unlabelled",
    "thermal_normalization",
    "splits",
    "format_version",
    "description",
}


def read_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest of a paired-folder dataset; every problem names the manifest field."""
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(path, "manifest not found (a paired-folder dataset needs one)")
    try:
        manifest = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DatasetError(path, f"malformed YAML ({error})") from error
    if not isinstance(manifest, Mapping):
        raise DatasetError(path, f"must be a mapping, got {type(manifest).__name__}")
    unknown = sorted(set(manifest) - _MANIFEST_KEYS)
    if unknown:
        raise DatasetError(path, f"unknown field(s) {unknown}; allowed: {sorted(_MANIFEST_KEYS)}")
    classes = manifest.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c.strip() for c in classes)
    ):
        raise DatasetError(
            path, f"field 'classes' must be a non-empty list of names, got {classes!r}"
        )
    if len({class_key(c) for c in classes}) != len(classes):
        raise DatasetError(path, f"field 'classes' repeats a name: {classes}")
    if manifest.get("label_format") not in LABEL_FORMATS:
        raise DatasetError(
            path,
            f"field 'label_format' must be one of {LABEL_FORMATS}, got {manifest.get('label_format')!r}",
        )
    if manifest.get("unlabelled", "error") not in UNLABELLED_POLICIES:
        raise DatasetError(
            path,
            f"field 'unlabelled' must be one of {UNLABELLED_POLICIES}, got {manifest['unlabelled']!r}",
        )
    if manifest.get("format_version", 1) != 1:
        raise DatasetError(
            path, f"field 'format_version' {manifest['format_version']!r} is not supported (only 1)"
        )
    splits = manifest.get("splits", {})
    if not isinstance(splits, Mapping) or not all(isinstance(v, str) for v in splits.values()):
        raise DatasetError(
            path, f"field 'splits' must map split names to file names, got {splits!r}"
        )
    try:
        build_normalizer(manifest.get("thermal_normalization"))
    except (TypeError, ValueError) as error:
        raise DatasetError(path, f"field 'thermal_normalization': {error}") from error
    return dict(manifest)


class PairedFolder(PairedDetectionDataset):
    """Pairs in the paired-folder format (see the module docstring); YOLO or DOTA labels."""

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        include_difficult: bool = True,
        thermal_normalization: ThermalSpec = None,
        transform: Transform | None = None,
        skip_invalid: bool = False,
        bounds_tolerance: float = 2.0,
    ) -> None:
        root = Path(root)
        manifest = read_manifest(root)
        self.label_format: str = manifest["label_format"]
        self.manifest = manifest
        thermal = (
            thermal_normalization
            if thermal_normalization is not None
            else manifest.get("thermal_normalization")
        )
        super().__init__(
            manifest["classes"], self.label_format == "dota", thermal, transform, skip_invalid
        )
        self._index_of = {class_key(c): i for i, c in enumerate(self.class_names)}
        self._include_difficult = bool(include_difficult)
        self._tolerance = float(bounds_tolerance)
        self.fusion_only_allowed = manifest.get("unlabelled", "error") == "fusion_only"
        rgb_dir, thermal_dir = find_dir(root, "rgb"), find_dir(root, "thermal")
        labels = root / "labels"
        # a fusion-only dataset (e.g. TNO alone) may have no labels at all
        allow_missing = self.fusion_only_allowed and not labels.exists()
        self._labels_dir = labels if allow_missing else find_dir(root, "labels")
        entries = pair_stems(index_images(rgb_dir), index_images(thermal_dir))
        if split is not None:
            splits = manifest.get("splits", {})
            if split not in splits:
                raise DatasetError(
                    root / MANIFEST,
                    f"field 'splits' has no split {split!r}; it has {sorted(splits)}",
                )
            chosen = set(read_split_file(root / splits[split]))
            present = {stem for stem, _, _ in entries}
            for stem in sorted(chosen - present):
                self._add(stem, partial(missing_from_split, root / splits[split], stem, rgb_dir))
            entries = [e for e in entries if e[0] in chosen]
        for stem, rgb, thermal_path in entries:
            self._add(stem, partial(self._record, stem, rgb, thermal_path, rgb_dir, thermal_dir))
        self._finish(root)

    def _record(
        self, stem: str, rgb: Path | None, thermal: Path | None, rgb_dir: Path, thermal_dir: Path
    ) -> Record:
        rgb, thermal = require_pair(stem, rgb, thermal, rgb_dir, thermal_dir)
        size = paired_size(rgb, thermal)
        path = self._labels_dir / f"{stem}.txt"
        if not path.is_file():
            if self.fusion_only_allowed:
                empty = np.zeros((0, 5), np.float32)
                return Record(
                    stem, rgb, thermal, size, empty, np.zeros(0, np.int64), labelled=False
                )
            raise DatasetError(
                path,
                "label file not found (write an empty file for a pair without objects, or set "
                "'unlabelled: fusion_only' in the manifest for fusion-only pairs)",
            )
        lines = [
            (n, line.split())
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip()
        ]
        if self.label_format == "yolo":
            boxes, labels = self._yolo(path, lines, size)
        else:
            boxes, labels = self._dota(path, lines, size)
        return Record(stem, rgb, thermal, size, boxes, labels)

    def _yolo(
        self, path: Path, lines: list[tuple[int, list[str]]], size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        width, height = size
        xyxy, labels = [], []
        for n, tokens in lines:
            what = f"line {n}"
            if len(tokens) != 5:
                raise DatasetError(
                    path, f"{what} must be 'class cx cy w h', got {' '.join(tokens)!r}"
                )
            values = _floats(tokens, path, what)
            label = values[0]
            if label != int(label) or not 0 <= label < len(self.class_names):
                raise DatasetError(
                    path,
                    f"{what} has class index {tokens[0]!r}; expected 0..{len(self.class_names) - 1}",
                )
            cx, cy, w, h = (
                values[1] * width,
                values[2] * height,
                values[3] * width,
                values[4] * height,
            )
            if w <= 0 or h <= 0:
                raise DatasetError(path, f"{what} has an empty box (w={values[3]}, h={values[4]})")
            corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
            xyxy.append(check_inside(corners, size, self._tolerance, path, what).reshape(4))
            labels.append(int(label))
        return xyxy_to_boxes(np.array(xyxy).reshape(-1, 4)), np.array(labels, np.int64)

    def _dota(
        self, path: Path, lines: list[tuple[int, list[str]]], size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        polygons, labels = [], []
        dropped: Counter[str] = Counter()
        for n, tokens in lines:
            what = f"line {n}"
            if tokens[0].lower().startswith(("imagesource:", "gsd:")):
                continue
            if len(tokens) not in (9, 10):
                raise DatasetError(
                    path,
                    f"{what} must be 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]', got {' '.join(tokens)!r}",
                )
            polygon = np.reshape(_floats(tokens[:8], path, what), (4, 2))
            polygon = check_inside(polygon, size, self._tolerance, path, what)
            key = class_key(tokens[8])
            if key not in self._index_of:
                raise DatasetError(
                    path,
                    f"{what} has unknown class {tokens[8]!r}; the manifest lists {list(self.class_names)}",
                )
            if len(tokens) == 10 and tokens[9] not in ("0", "1"):
                raise DatasetError(
                    path, f"{what} has difficult flag {tokens[9]!r}; expected 0 or 1"
                )
            if not self._include_difficult and len(tokens) == 10 and tokens[9] == "1":
                dropped["difficult"] += 1
                continue
            polygons.append(polygon)
            labels.append(self._index_of[key])
        self.dropped_objects.update(dropped)
        polygons_array = np.array(polygons, np.float64).reshape(-1, 4, 2)
        boxes = polygons_to_boxes(polygons_array)
        degenerate = np.flatnonzero(boxes[:, 2] * boxes[:, 3] < 1e-6)
        if len(degenerate):
            raise DatasetError(
                path,
                f"object {int(degenerate[0])} has a degenerate polygon {polygons_array[degenerate[0]].tolist()}",
            )
        return boxes, np.array(labels, np.int64)


def _floats(tokens: list[str], path: Path, what: str) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError as error:
        raise DatasetError(path, f"{what} has a non-numeric field: {' '.join(tokens)!r}") from error
    if not all(np.isfinite(values)):
        raise DatasetError(path, f"{what} has a non-finite field: {' '.join(tokens)!r}")
    return values
