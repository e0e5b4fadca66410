"""Image files on disk, read one way by every tool: folder indexing by stem, RGB and raw thermal
readers, and errors that name the file.

fusion-infer, fusion-eval's folder mode, the benchmark and the dataset loaders all go through
this module, so a file that one of them refuses is refused by all with the same words.

Truncated files: OpenCV decodes a JPEG cut short (an interrupted download or copy, e.g.
DroneVehicle's ``train/trainimg/09012.jpg`` and ``train/trainimgr/16009.jpg``) with only a
"Premature end of JPEG file" warning and fills the missing rows with grey. :func:`image_size`
(run on every image when a loader scans its folders) and the readers therefore check that a JPEG
ends with its end-of-image marker and a PNG with its IEND chunk; a file that does not is confirmed
by a strict PIL decode (so data appended after the end marker is accepted) and reported as
ImageFileError naming it.
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


class ImageFileError(ValueError):
    """An image file or folder that is missing, unreadable or inconsistent; ``path`` names it."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.reason = message


def index_images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder`` by stem; two images with one stem are an error."""
    if not folder.is_dir():
        raise ImageFileError(folder, "image folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise ImageFileError(
                    path, f"two images share the stem {path.stem!r}: {found[path.stem].name}"
                )
            found[path.stem] = path
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only, so scanning a large dataset stays fast."""
    if not path.is_file():
        raise ImageFileError(path, "image file not found")
    try:
        with Image.open(path) as image:
            size = image.size
    except (OSError, UnidentifiedImageError) as error:
        raise ImageFileError(path, f"unreadable image ({error})") from error
    check_complete(path)
    return size


def check_complete(path: Path) -> None:
    """ImageFileError when a JPEG or PNG file is cut short (its end marker is missing and a strict
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
        raise ImageFileError(
            path, f"truncated image: ends in zero bytes without its {marker}; {advice}"
        )
    try:  # no marker at the very end: data may follow it, which a strict decode accepts
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ImageFileError(
            path,
            f"truncated image: no {marker} at the end of its {length} bytes and a strict decode "
            f"fails ({error}); {advice}",
        ) from error


def read_rgb(path: Path) -> np.ndarray:
    """uint8 HxWx3 in RGB order (grey images are replicated, alpha dropped)."""
    check_complete(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageFileError(path, "unreadable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_unchanged(path: Path) -> np.ndarray:
    """The file's pixels as stored (BGR order); three equal channels become one."""
    check_complete(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageFileError(path, "unreadable image (OpenCV could not decode it)")
    if image.ndim == 3:
        image = image[:, :, :3]
        if image.shape[2] == 1 or (
            np.array_equal(image[:, :, 0], image[:, :, 1])
            and np.array_equal(image[:, :, 0], image[:, :, 2])
        ):
            image = image[:, :, 0]
    return image


def read_thermal(path: Path) -> np.ndarray:
    """Raw thermal HxW in its stored depth (uint8, uint16 counts or float32); colour -> grey."""
    image = _read_unchanged(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageFileError(path, f"thermal image has unsupported pixel type {image.dtype}")
    return np.ascontiguousarray(image)


def read_image(path: Path) -> np.ndarray:
    """An image as it is: HxW grey (uint8, uint16 or float32; three equal channels count as
    grey) or HxWx3 uint8 RGB. For fused images, which may be either."""
    image = _read_unchanged(path)
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise ImageFileError(path, f"colour image must be 8-bit, found {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
