"""Folder and split-file helpers of the dataset loaders. Image reading is shared with the
other tools (`fusion_perception.image_files`); the loaders call its error DatasetError."""

from __future__ import annotations

from pathlib import Path

from fusion_perception.image_files import IMAGE_EXTENSIONS
from fusion_perception.image_files import ImageFileError as DatasetError


def find_dir(root: Path, *names: str) -> Path:
    """The sub-folder of ``root`` matching one of ``names`` (case-insensitive), or DatasetError."""
    if not root.is_dir():
        raise DatasetError(root, "dataset root folder not found")
    wanted = {n.lower() for n in names}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    raise DatasetError(root, f"has no sub-folder named {' or '.join(names)}")


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
