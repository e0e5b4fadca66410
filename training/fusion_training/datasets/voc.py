"""Pascal-VOC-style XML label files (M3FD, LLVIP; DroneVehicle adds polygons).

VOC coordinates are read as continuous pixel coordinates (xmin..xmax spans the object), the
convention of the fusion-detection repositories that use these datasets.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import check_inside, class_key, xyxy_to_boxes
from .files import DatasetError


def read_xml(path: Path) -> ET.Element:
    """Root element of a label file; missing or malformed files raise DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "label file not found")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DatasetError(path, f"malformed XML ({error})") from error


def object_name(obj: ET.Element, path: Path, index: int) -> str:
    name = obj.findtext("name")
    if name is None or not name.strip():
        raise DatasetError(path, f"object {index} has no <name>")
    return name.strip()


def number(parent: ET.Element, tag: str, path: Path, what: str) -> float:
    """The float in ``<tag>`` under ``parent``; missing or non-numeric text raises DatasetError."""
    text = parent.findtext(tag)
    if text is None:
        raise DatasetError(path, f"{what} has no <{tag}>")
    try:
        value = float(text)
    except ValueError as error:
        raise DatasetError(path, f"{what} <{tag}> is not a number: {text!r}") from error
    if not np.isfinite(value):
        raise DatasetError(path, f"{what} <{tag}> is not finite: {text!r}")
    return value


def resolve_class(
    name: str, index_of: Mapping[str, int], known: set[str], path: Path, what: str
) -> int | None:
    """Label index of ``name`` (compared with :func:`class_key`); None for a known class that is
    not selected; DatasetError for a name the dataset does not define."""
    key = class_key(name)
    if key in index_of:
        return index_of[key]
    if key in known:
        return None
    raise DatasetError(
        path, f"{what} has unknown class {name!r}; this dataset defines {sorted(known)}"
    )


def voc_boxes(
    path: Path,
    size: tuple[int, int],
    index_of: Mapping[str, int],
    known: set[str],
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """Horizontal boxes [N, 5], labels [N] and dropped-object counts from a VOC XML file.

    index_of: class_key(name) -> label index of the selected classes; known: class_key of every
    class the dataset defines (objects of known, unselected classes are dropped and counted).
    Boxes must lie inside the ``size`` (width, height) image up to ``tolerance`` pixels.
    """
    root = read_xml(path)
    xyxy, labels = [], []
    dropped: Counter[str] = Counter()
    for i, obj in enumerate(root.iter("object")):
        name = object_name(obj, path, i)
        what = f"object {i} ({name})"
        label = resolve_class(name, index_of, known, path, what)
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(path, f"{what} has no <bndbox>")
        corners = [number(box, tag, path, what) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            raise DatasetError(path, f"{what} has an empty box {corners}")
        if label is None:
            dropped["class not selected"] += 1
            continue
        xyxy.append(
            check_inside(np.reshape(corners, (2, 2)), size, tolerance, path, what).reshape(4)
        )
        labels.append(label)
    return xyxy_to_boxes(np.array(xyxy).reshape(-1, 4)), np.array(labels, np.int64), dropped
