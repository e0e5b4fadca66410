"""File-level helpers for the loaders: errors naming the file, folder indexing, image I/O.

Truncated files: OpenCV decodes a JPEG cut short (an interrupted download or copy, e.g.
DroneVehicle's ``train/trainimg/09012.jpg`` and ``train/trainimgr/16009.jpg``) with only a
"Premature end of JPEG file" warning and fills the missing rows with grey. :func:`image_size`
(run on every image when a loader scans its folders) and the readers therefore check that a JPEG
ends with its end-of-image marker and a PNG with its IEND chunk; a file that does not is confirmed
by a strict PIL decode (so data appended after the end marker is accepted) and reported as
DatasetError naming it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_JPEG_END = b"\xff\xd9"  # EOI marker
_PNG_END = b"IEND\xaeB`\x82"  # IEND chunk type and its CRC
_TAIL_BYTES = 4096


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; ``path`` names the file."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.reason = message


def find_dir(root: Path, *names: str) -> Path:
    """The sub-folder of ``root`` matching one of ``names`` (case-insensitive), or DatasetError."""
    if not root.is_dir():
        raise DatasetError(root, "dataset root folder not found")
    wanted = {n.lower() for n in names}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    raise DatasetError(root, f"has no sub-folder named {' or '.join(names)}")


def index_images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem; two images with one stem are an error."""
    if not folder.is_dir():
        raise DatasetError(folder, "image folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise DatasetError(
                    path, f"two images share the stem {path.stem!r}: {found[path.stem].name}"
                )
            found[path.stem] = path
    return found


def read_split_file(path: Path) -> list[str]:
    """Stems listed one per line (extensions and folders stripped; blank and # lines skipped)."""
    if not path.is_file():
        raise DatasetError(path, "split file not found")
    stems = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name = Path(line)
            known = name.suffix.lower() in (*IMAGE_EXTENSIONS, ".xml", ".txt")
            stems.append(name.stem if known else name.name)
    return stems


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only, so scanning a large dataset stays fast."""
    if not path.is_file():
        raise DatasetError(path, "image file not found")
    try:
        with Image.open(path) as image:
            size = image.size
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(path, f"unreadable image ({error})") from error
    check_complete(path)
    return size


def check_complete(path: Path) -> None:
    """DatasetError when a JPEG or PNG file is cut short (its end marker is missing and a strict
    decode fails); other formats are not checked. Reads the file's tail, and all of it only for
    a file whose tail looks wrong."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png") or not path.is_file():
        return  # a missing file is reported by the caller
    with path.open("rb") as file:
        file.seek(0, 2)
        length = file.tell()
        file.seek(max(0, length - _TAIL_BYTES))
        tail = file.read()
    data = tail.rstrip(b"\x00")  # zero padding after the end marker is harmless
    if data.endswith(_PNG_END if suffix == ".png" else _JPEG_END):
        return
    marker = "IEND chunk" if suffix == ".png" else "end-of-image marker (FF D9)"
    advice = (
        "OpenCV would fill the missing rows with grey. Re-copy or re-download it (a loader's "
        "skip_invalid=True leaves such a pair out)"
    )
    if len(data) < len(tail):  # a preallocated, partly written file: a decoder eats the zeros
        raise DatasetError(
            path, f"truncated image: ends in zero bytes without its {marker}; {advice}"
        )
    try:  # no marker at the very end: data may follow it, which a strict decode accepts
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DatasetError(
            path,
            f"truncated image: no {marker} at the end of its {length} bytes and a strict decode "
            f"fails ({error}); {advice}",
        ) from error


def read_rgb(path: Path) -> np.ndarray:
    """uint8 HxWx3 in RGB order (grey images are replicated, alpha dropped)."""
    check_complete(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(path, "unreadable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_thermal(path: Path) -> np.ndarray:
    """Raw thermal HxW in its stored depth (uint8, uint16 counts or float32); colour -> grey."""
    check_complete(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "unreadable image (OpenCV could not decode it)")
    if image.ndim == 3:
        image = image[:, :, :3]
        if image.shape[2] == 1 or (
            np.array_equal(image[:, :, 0], image[:, :, 1])
            and np.array_equal(image[:, :, 0], image[:, :, 2])
        ):
            image = image[:, :, 0]
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise DatasetError(path, f"thermal image has unsupported pixel type {image.dtype}")
    return np.ascontiguousarray(image)
