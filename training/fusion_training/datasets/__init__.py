"""Paired RGB + thermal detection datasets in their real on-disk formats, plus synthetic scenes.

Every dataset yields dicts: ``rgb`` uint8 HxWx3 (RGB order), ``thermal`` float32 HxW in [0, 1],
``boxes`` float32 [N, 5] (cx, cy, w, h, angle) in pixels, ``labels`` int64 [N], ``image_id`` str,
``labelled`` bool (False: an unannotated, fusion-only pair), and has ``class_names`` and
``rotated`` attributes. Use :func:`build_dataset` (``mixture`` combines several) and
:func:`collate`.
"""

from .base import PairedDetectionDataset, Record, Skipped
from .dronevehicle import DroneVehicle
from .factory import FORMATS, build_dataset, collate
from .files import DatasetError
from .folder import PairedFolder, read_manifest
from .llvip import LLVIP
from .m3fd import M3FD
from .mixture import MixtureDataset
from .synthetic_scenes import SyntheticDataset

__all__ = [
    "FORMATS",
    "LLVIP",
    "M3FD",
    "DatasetError",
    "DroneVehicle",
    "MixtureDataset",
    "PairedDetectionDataset",
    "PairedFolder",
    "Record",
    "Skipped",
    "SyntheticDataset",
    "build_dataset",
    "collate",
    "read_manifest",
]
