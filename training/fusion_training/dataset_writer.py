"""Writing a paired-folder dataset (the layout `fusion_training.datasets.PairedFolder` reads) so
that the folder only ever holds complete pairs and the manifest comes last."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

MANIFEST = "manifest.yaml"
SOURCE = "source.yaml"
_PARTIAL = ".partial"


def thermal_suffix(raw: np.ndarray) -> str:
    """PNG keeps 8- and 16-bit counts losslessly; float (32FC1) needs TIFF."""
    return ".tiff" if raw.dtype == np.float32 else ".png"


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    ok, buffer = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"image: OpenCV cannot encode {image.dtype} {image.shape} as {suffix}")
    return buffer.tobytes()


class DatasetWriter:
    """Writes pairs atomically into a new paired-folder dataset; the manifest comes last."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ValueError(
                f"--out: {self.out} exists and is not an empty folder; choose a new one"
            )
        self.dirs = {name: self.out / name for name in ("rgb", "thermal", "labels")}
        self._created = [f for f in (self.out, *self.dirs.values()) if not f.exists()]
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.stems: list[str] = []

    def write_pair(
        self, stem: str, rgb: np.ndarray, thermal: np.ndarray, label_lines: Sequence[str]
    ) -> None:
        """rgb uint8 HxWx3 (RGB order); thermal raw HxW uint8/uint16/float32 of the same size."""
        label_text = "".join(f"{line}\n" for line in label_lines)
        files = [
            (self.dirs["labels"] / f"{stem}.txt", label_text.encode()),
            (
                self.dirs["thermal"] / f"{stem}{thermal_suffix(thermal)}",
                encode_image(thermal, thermal_suffix(thermal)),
            ),
            (self.dirs["rgb"] / f"{stem}.png", encode_image(rgb[:, :, ::-1], ".png")),
        ]
        temps = [final.with_name(f".{final.name}{_PARTIAL}") for final, _ in files]
        done: list[Path] = []
        try:
            for temp, (_, data) in zip(temps, files, strict=True):
                temp.write_bytes(data)
            # the RGB image goes last: the loader indexes pairs by it
            for temp, (final, _) in zip(temps, files, strict=True):
                temp.replace(final)
                done.append(final)
        except BaseException:
            for path in (*temps, *done):
                path.unlink(missing_ok=True)
            raise
        self.stems.append(stem)

    def abandon(self) -> None:
        """After a failure: remove the folders this writer created if they are still empty."""
        for folder in (*self.dirs.values(), self.out):
            if folder in self._created and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def finish(self, manifest: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        """Write source.yaml, then manifest.yaml (each atomically)."""
        for name, data in ((SOURCE, source), (MANIFEST, manifest)):
            final = self.out / name
            temp = final.with_name(f".{name}{_PARTIAL}")
            temp.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            temp.replace(final)
