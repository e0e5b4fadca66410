"""File-level helpers for the loaders: errors naming the file, folder indexing, image I/O."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(path, f"unreadable image ({error})") from error


def read_rgb(path: Path) -> np.ndarray:
    """uint8 HxWx3 in RGB order (grey images are replicated, alpha dropped)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(path, "unreadable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_thermal(path: Path) -> np.ndarray:
    """Raw thermal HxW in its stored depth (uint8, uint16 counts or float32); colour -> grey."""
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
