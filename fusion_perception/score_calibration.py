"""Detection score calibration: what a checkpoint's scores mean.

The head's raw score, sqrt(sigmoid(class) * sigmoid(centre-ness)), ranks boxes well but is not
a probability: the focal-loss prior leaves every background location near 0.1, and on real
pairs a raw 0.35 box is right about one time in ten. A threshold on it is therefore hard to
choose. Platt scaling maps the raw score's logit through one affine function,

    calibrated = sigmoid(slope * logit(raw) + offset),   slope > 0,

fitted on held-out labelled pairs so that a calibrated score estimates the chance that the box
is a correct detection (right class, IoU >= 0.5 with the object it overlaps most, which no
higher-scored box took: VOC's matching). The map is monotone and shared by the classes, so it
changes no ranking, no NMS decision and no AP: only the scores reported and what a threshold
keeps. `fusion-calibrate` fits it; the checkpoint carries it outside the network's
fingerprint (exported artifacts and compensations stay valid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Raw scores are clamped this far from 0 and 1 before the logit (float32-safe).
LOGIT_EPS = 1e-6


@dataclass(frozen=True)
class ScoreCalibration:
    """Platt scaling of the raw detection score; ``fitted_on`` records where (for the model
    card): dataset, split, number of boxes and of correct ones, matching IoU."""

    slope: float
    offset: float
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("slope", "offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"score_calibration.{name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"score_calibration.{name}: must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.slope <= 0:
            raise ValueError(
                f"score_calibration.slope: must be > 0 (a monotone map), got {self.slope!r}"
            )
        if not isinstance(self.fitted_on, dict):
            raise ValueError(
                f"score_calibration.fitted_on: expected a mapping, got {self.fitted_on!r}"
            )

    def apply(self, scores: Tensor) -> Tensor:
        """Calibrated scores, computed in float32 (fp16 logits would saturate), same dtype out."""
        raw = scores.float().clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        return torch.sigmoid(self.slope * torch.logit(raw) + self.offset).to(scores.dtype)

    def raw_threshold(self, calibrated: float) -> float:
        """The raw score a calibrated threshold corresponds to (for reports and logs)."""
        if not 0.0 < calibrated < 1.0:
            return calibrated
        logit = (math.log(calibrated / (1.0 - calibrated)) - self.offset) / self.slope
        return 1.0 / (1.0 + math.exp(-logit))

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "offset": self.offset, "fitted_on": dict(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        if not isinstance(data, Mapping):
            raise ValueError(f"score_calibration: expected a mapping, got {data!r}")
        unknown = sorted(set(data) - {"slope", "offset", "fitted_on"})
        if unknown:
            raise ValueError(f"score_calibration: unknown key(s) {unknown}")
        for key in ("slope", "offset"):
            if key not in data:
                raise ValueError(f"score_calibration.{key}: missing")
        fitted_on = data.get("fitted_on", {})
        if not isinstance(fitted_on, Mapping):
            raise ValueError(f"score_calibration.fitted_on: expected a mapping, got {fitted_on!r}")
        return cls(data["slope"], data["offset"], dict(fitted_on))
