"""Raw thermal -> float32 [0, 1] for dataset items, with the package's named normalizers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fusion_perception.thermal import ThermalNormalizer, make_normalizer

from .files import DatasetError

ThermalSpec = ThermalNormalizer | Mapping[str, Any] | None
"""A normalizer, ``{"scheme", "version", "params"}`` (ThermalNormalizer.to_dict, as checkpoints and
manifests record it), ``{"scheme", "params"}``, or ``{"scheme", <params>...}`` (e.g. ``{"scheme":
"fixed_range", "lo": 7000, "hi": 9000}``); each mapping is read with `ThermalNormalizer.recorded`,
so a fixed range beyond every 8-bit value divides 8-bit frames by 255. None: 8-bit thermal is
divided by 255 and deeper thermal is an error."""


def build_normalizer(
    spec: ThermalSpec, field: str = "thermal_normalization"
) -> ThermalNormalizer | None:
    """Turn a :data:`ThermalSpec` into a normalizer; errors name ``field``."""
    if spec is None or isinstance(spec, ThermalNormalizer):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{field} must be a mapping or a ThermalNormalizer, got {type(spec).__name__}"
        )
    if "version" in spec:
        return ThermalNormalizer.recorded(spec)
    rest = dict(spec)
    scheme = rest.pop("scheme", None)
    if not isinstance(scheme, str):
        raise ValueError(f"{field} must name a 'scheme' (e.g. fixed_range), got {dict(spec)!r}")
    params = rest.pop("params", {})
    if not isinstance(params, Mapping):
        raise ValueError(f"{field}.params must be a mapping, got {params!r}")
    # every spelling reads 8-bit frames the same way (`ThermalNormalizer.recorded`)
    return ThermalNormalizer.recorded(make_normalizer(scheme, **{**params, **rest}).to_dict())


def normalize_thermal(
    raw: np.ndarray, normalizer: ThermalNormalizer | None, path: Path
) -> np.ndarray:
    """float32 HxW in [0, 1]. Each image is normalized on its own (temporal state is reset),
    because dataset items are independent frames in arbitrary order."""
    if normalizer is None:
        if raw.dtype != np.uint8:
            raise DatasetError(
                path,
                f"thermal image is {raw.dtype}; set thermal_normalization (e.g. "
                "{'scheme': 'fixed_range', 'lo': ..., 'hi': ...}) to map its raw values to [0, 1]",
            )
        return raw.astype(np.float32) / np.float32(255.0)
    normalizer.reset()
    return normalizer(raw)
