"""Common machinery of the file-based paired RGB + thermal detection datasets.

A loader scans its folders once at construction: it pairs RGB and thermal images by file stem,
reads image headers (not pixels) and parses and validates every label file. Anything wrong
raises :class:`DatasetError` naming the file, or, with ``skip_invalid=True``, that pair is left
out and listed in ``dataset.skipped`` (a summary is logged and available as ``skip_summary()``).

Items are dicts: ``rgb`` uint8 HxWx3 (RGB order), ``thermal`` float32 HxW in [0, 1], ``boxes``
float32 [N, 5] (cx, cy, w, h, angle) in pixels, ``labels`` int64 [N], ``image_id`` str and
``labelled`` bool (False for a pair that has no annotation at all, so no boxes means "unknown",
not "no objects": the detection loss skips it, the fusion loss does not); loaders whose labels
carry VOC ``difficult`` flags (DroneVehicle) add ``difficult`` bool [N], which evaluation uses to
ignore those objects as the VOC protocol does. An optional ``transform`` (e.g.
:class:`fusion_training.augment.PairedAugment`) maps that dict; when it changes the number of
boxes, ``difficult`` no longer lines up and is removed from its output.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fusion_perception.image_files import image_size, read_rgb, read_thermal

from .files import DatasetError
from .thermal import ThermalSpec, build_normalizer, normalize_thermal

_LOG = logging.getLogger(__name__)

Item = dict[str, Any]
Transform = Callable[[Item], Item]


@dataclass(frozen=True)
class Record:
    """One validated pair: files, stored image size (width, height), labels, optional crop."""

    image_id: str
    rgb_path: Path
    thermal_path: Path
    size: tuple[int, int]
    boxes: np.ndarray  # float32 [N, 5] in the coordinates of the returned (cropped) images
    labels: np.ndarray  # int64 [N]
    crop: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) of the stored images
    labelled: bool = True  # False: no annotation exists (boxes is empty), fusion-only pair
    difficult: np.ndarray | None = None  # bool [N] VOC "difficult" flags, if the labels have them


@dataclass(frozen=True)
class Skipped:
    """A pair left out by ``skip_invalid=True`` and why."""

    image_id: str
    path: Path
    reason: str


def class_key(name: str) -> str:
    """Comparison key for class names: case, '_', '-' and repeated spaces do not matter."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


# Names that denote one class across datasets (compared with class_key), so a model trained with
# one dataset's names can be scored on another's: an M3FD model (People, Car, ...) on LLVIP (person).
CLASS_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("person", "people", "pedestrian"),
    ("car", "vehicle"),
    ("bike", "bicycle", "cyclist"),
    ("motorcycle", "motorbike"),
)
_SYNONYM_GROUP = {class_key(n): i for i, group in enumerate(CLASS_SYNONYMS) for n in group}


def match_class_names(
    names: Sequence[str], targets: Sequence[str], what: str = "classes"
) -> dict[str, str]:
    """Each of ``names`` -> the one of ``targets`` it denotes: the same class_key, else the same
    CLASS_SYNONYMS group. ValueError names a class without a match, or one matching two targets
    (``what`` says what the targets are)."""
    exact = {class_key(t): t for t in targets}
    matched: dict[str, str] = {}
    for name in names:
        key = class_key(name)
        if key in exact:
            matched[name] = exact[key]
            continue
        group = _SYNONYM_GROUP.get(key)
        candidates = [
            t for t in targets if group is not None and _SYNONYM_GROUP.get(class_key(t)) == group
        ]
        if len(candidates) != 1:
            why = "matches several" if candidates else "matches none"
            raise ValueError(
                f"class {name!r} {why} of the {what} {list(targets)}"
                f"{f' ({candidates})' if candidates else ''}; synonyms accepted: "
                f"{[list(g) for g in CLASS_SYNONYMS]}"
            )
        matched[name] = candidates[0]
    return matched


def select_classes(classes: Sequence[str], defined: Sequence[str]) -> dict[str, int]:
    """class_key -> label index for ``classes`` (a subset of ``defined``, in the caller's order)."""
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes must be a non-empty sequence of names, got {classes!r}")
    keys = [class_key(c) for c in classes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"classes must not repeat a name, got {list(classes)}")
    allowed = {class_key(d) for d in defined}
    unknown = [c for c, k in zip(classes, keys, strict=True) if k not in allowed]
    if unknown:
        raise ValueError(
            f"classes {unknown} are not defined by this dataset; choose from {list(defined)}"
        )
    return {k: i for i, k in enumerate(keys)}


def xyxy_to_boxes(xyxy: np.ndarray) -> np.ndarray:
    """Horizontal (x0, y0, x1, y1) [N, 4] -> (cx, cy, w, h, 0) float32 [N, 5]."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(xyxy), 5), np.float32)
    out[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
    out[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
    out[:, 2] = xyxy[:, 2] - xyxy[:, 0]
    out[:, 3] = xyxy[:, 3] - xyxy[:, 1]
    return out


def check_inside(
    points: np.ndarray, size: tuple[int, int], tolerance: float, path: Path, what: str
) -> np.ndarray:
    """Points [..., 2] must lie in the image up to ``tolerance`` px; returns them clipped to it."""
    points = np.asarray(points, dtype=np.float64)
    width, height = size
    x, y = points[..., 0], points[..., 1]
    if not np.isfinite(points).all():
        raise DatasetError(path, f"{what} has a non-finite coordinate")
    if (
        x.min() < -tolerance
        or y.min() < -tolerance
        or x.max() > width + tolerance
        or y.max() > height + tolerance
    ):
        corners = np.round(points.reshape(-1, 2), 1).tolist()
        raise DatasetError(path, f"{what} at {corners} lies outside the {width}x{height} image")
    return np.stack([np.clip(x, 0, width), np.clip(y, 0, height)], axis=-1)


def paired_size(rgb_path: Path, thermal_path: Path) -> tuple[int, int]:
    """Common (width, height) of a registered pair, from the headers; sizes must agree."""
    rgb_size = image_size(rgb_path)
    thermal_size = image_size(thermal_path)
    if rgb_size != thermal_size:
        raise DatasetError(
            thermal_path,
            f"size {thermal_size[0]}x{thermal_size[1]} differs from its RGB partner {rgb_path.name} "
            f"({rgb_size[0]}x{rgb_size[1]}); pairs must be registered to one size",
        )
    return rgb_size


def pair_stems(
    rgb: dict[str, Path], thermal: dict[str, Path]
) -> list[tuple[str, Path | None, Path | None]]:
    """All stems of both folders, sorted, with the file of each modality (None when unpaired)."""
    return [(stem, rgb.get(stem), thermal.get(stem)) for stem in sorted(set(rgb) | set(thermal))]


def require_pair(
    stem: str, rgb: Path | None, thermal: Path | None, rgb_dir: Path, thermal_dir: Path
) -> tuple[Path, Path]:
    """Both files of a pair, or DatasetError naming the lone file and the folder lacking its partner."""
    if rgb is None:
        raise DatasetError(thermal, f"thermal image has no RGB partner named {stem}.* in {rgb_dir}")
    if thermal is None:
        raise DatasetError(rgb, f"RGB image has no thermal partner named {stem}.* in {thermal_dir}")
    return rgb, thermal


def missing_from_split(split_file: Path, stem: str, folder: Path) -> Record:
    """Builder for a stem a split file lists but the image folder lacks: always an error."""
    raise DatasetError(split_file, f"lists {stem!r}, which has no image in {folder}")


def split_stems(stems: Sequence[str], split: str, train_ratio: float, seed: int) -> set[str]:
    """Deterministic random train/val split of ``stems`` (order-independent): 'all', 'train', 'val'."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be 'all', 'train' or 'val', got {split!r}")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio!r}")
    ordered = sorted(stems)
    if split == "all":
        return set(ordered)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    n_train = round(train_ratio * len(ordered))
    chosen = permutation[:n_train] if split == "train" else permutation[n_train:]
    return {ordered[i] for i in chosen}


class PairedDetectionDataset(Dataset):
    """Base of the file-based loaders; subclasses scan their format and call ``_add``/``_finish``.

    Attributes: ``class_names`` (label order), ``rotated`` (oriented boxes), ``records``,
    ``skipped`` and ``dropped_objects`` (a Counter of objects left out of otherwise valid labels,
    by reason).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        rotated: bool,
        thermal_normalization: ThermalSpec,
        transform: Transform | None,
        skip_invalid: bool,
    ) -> None:
        self.class_names = tuple(class_names)
        self.rotated = rotated
        self.transform = transform
        self.skip_invalid = bool(skip_invalid)
        self.records: list[Record] = []
        self.skipped: list[Skipped] = []
        self.dropped_objects: Counter[str] = Counter()
        self._normalizer = build_normalizer(thermal_normalization)

    def _add(self, image_id: str, build: Callable[[], Record]) -> None:
        """Validate one pair through ``build``; keep it, or skip it when allowed."""
        try:
            self.records.append(build())
        except DatasetError as error:
            if not self.skip_invalid:
                raise
            self.skipped.append(Skipped(image_id, error.path, error.reason))

    def _finish(self, root: Path) -> None:
        """Log what was skipped or dropped; an empty dataset is an error."""
        if self.skipped:
            _LOG.warning("%s", self.skip_summary())
        self.dropped_objects = +self.dropped_objects  # keep reasons that dropped something
        if self.dropped_objects:
            _LOG.info("%s: objects left out: %s", root, dict(sorted(self.dropped_objects.items())))
        if not self.records:
            detail = f" ({len(self.skipped)} skipped as invalid)" if self.skipped else ""
            raise DatasetError(root, f"no valid image pairs found{detail}")

    def skip_summary(self) -> str:
        """Human-readable list of skipped pairs with the reason of each."""
        if not self.skipped:
            return f"{type(self).__name__}: nothing skipped ({len(self.records)} pairs)"
        lines = [
            f"{type(self).__name__}: skipped {len(self.skipped)} invalid pair(s), kept {len(self.records)}:"
        ]
        lines += [f"  {s.image_id}: {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        rgb = read_rgb(record.rgb_path)
        raw = read_thermal(record.thermal_path)
        for path, image in ((record.rgb_path, rgb), (record.thermal_path, raw)):
            if (image.shape[1], image.shape[0]) != record.size:
                raise DatasetError(
                    path,
                    f"decoded size {image.shape[1]}x{image.shape[0]} differs from the header's {record.size}",
                )
        if record.crop is not None:
            x0, y0, x1, y1 = record.crop
            rgb, raw = rgb[y0:y1, x0:x1], raw[y0:y1, x0:x1]
        item: Item = {
            "rgb": np.ascontiguousarray(rgb),
            "thermal": normalize_thermal(
                np.ascontiguousarray(raw), self._normalizer, record.thermal_path
            ),
            "boxes": record.boxes.copy(),
            "labels": record.labels.copy(),
            "image_id": record.image_id,
            "labelled": record.labelled,
        }
        if record.difficult is not None:
            item["difficult"] = record.difficult.copy()
        if self.transform is None:
            return item
        out = self.transform(item)
        if "difficult" in out and len(out["difficult"]) != len(out["boxes"]):
            # the transform dropped boxes (a crop) without the flags: they no longer line up
            out = {k: v for k, v in out.items() if k != "difficult"}
        return out
