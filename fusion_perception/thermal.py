"""Thermal normalization (ROS-free): raw camera values -> float32 in [0, 1], by named, versioned
schemes that every checkpoint records and the node, the dataset builder and the trainer apply
identically, so a model sees the same thermal values offline and on the robot.

Raw thermal is HxW uint8 (mono8), uint16 (mono16/16UC1 counts) or float32 (32FC1 degrees).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fusion_perception.settings import check_fields, setting

# Bump a scheme's version whenever its output for the same input and params changes, so a
# checkpoint trained with the old behaviour is refused instead of silently fed other values.
SCHEME_VERSIONS: dict[str, int] = {"fixed_range": 1, "percentile": 1, "minmax": 1}

# Per-scheme parameters and defaults; None for "lo"/"hi" means required.
_SCHEME_PARAMS: dict[str, dict[str, float | None]] = {
    "fixed_range": {"lo": None, "hi": None, "nonfinite_fill": None},
    "percentile": {"p_lo": 1.0, "p_hi": 99.0, "ema": 0.9, "nonfinite_fill": None},
    "minmax": {"nonfinite_fill": None},
}
_REQUIRED_PARAMS = {"fixed_range": ("lo", "hi")}
THERMAL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


PERCENTILE_SAMPLES = 65_536
# Percentile scheme, outlier guard: a frame whose percentile bounds disagree with the smoothed ones
# by more than this factor (span ratio, or distance from the current range in spans) is an outlier
# (a glitch frame of +-3e38 from a 32FC1 driver, a flat shutter/NUC frame) and leaves the EMA alone;
# OUTLIER_FRAMES such frames in a row mean the scene really changed, and their bounds are adopted.
OUTLIER_FACTOR = 100.0
OUTLIER_FRAMES = 3


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate_params(scheme: str, params: Mapping[str, Any]) -> dict[str, float | None]:
    """Return the full, checked parameter dict of ``scheme`` (defaults filled in)."""
    allowed = _SCHEME_PARAMS[scheme]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for thermal scheme {scheme!r}; "
            f"allowed: {sorted(allowed)}"
        )
    for name in _REQUIRED_PARAMS.get(scheme, ()):
        if params.get(name) is None:
            raise ValueError(f"thermal scheme {scheme!r} requires parameter {name!r}")
    out: dict[str, float | None] = {}
    for name, default in allowed.items():
        value = params.get(name, default)
        if value is None:
            out[name] = None
            continue
        if not _is_real(value) or not math.isfinite(float(value)):
            raise ValueError(f"thermal parameter {name!r} must be a finite number, got {value!r}")
        out[name] = float(value)
    fill = out["nonfinite_fill"]
    if fill is not None and not 0.0 <= fill <= 1.0:
        raise ValueError(f"thermal parameter 'nonfinite_fill' must be in [0, 1], got {fill!r}")
    if scheme == "fixed_range" and not out["hi"] > out["lo"]:
        raise ValueError(
            f"thermal parameter 'hi' ({out['hi']!r}) must be greater than 'lo' ({out['lo']!r})"
        )
    if scheme == "percentile":
        if not 0.0 <= out["p_lo"] < out["p_hi"] <= 100.0:
            raise ValueError(
                "thermal parameters must satisfy 0 <= p_lo < p_hi <= 100, got "
                f"p_lo={out['p_lo']!r}, p_hi={out['p_hi']!r}"
            )
        if not 0.0 <= out["ema"] < 1.0:
            raise ValueError(f"thermal parameter 'ema' must be in [0, 1), got {out['ema']!r}")
    return out


def _thermal_values(image: Any) -> tuple[np.ndarray, np.ndarray | None, np.dtype]:
    """Check a raw thermal frame; return (float32 HxW copy, finite mask or None, native dtype).

    The finite mask is only returned when some pixel is NaN/inf (float input).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"thermal image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"thermal image must be HxW or HxWx1, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"thermal image is empty (shape {image.shape})")
    dtype = image.dtype.newbyteorder("=")
    if dtype not in THERMAL_DTYPES:
        raise TypeError(
            f"thermal image dtype must be uint8 (mono8), uint16 (mono16/16UC1) or float32 "
            f"(32FC1), got {image.dtype}"
        )
    values = image.astype(np.float32)
    if dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            return values, finite, dtype
    return values, None, dtype


# Beyond this magnitude float32 arithmetic on the bounds can overflow (hi - lo > 3.4e38).
_FLOAT32_SAFE = 1e37


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 1] and clip; a flat range (hi <= lo) gives zeros."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    if max(abs(lo), abs(hi)) > _FLOAT32_SAFE:  # huge finite bounds: float64 avoids inf/inf = NaN
        wide = (values.astype(np.float64) - lo) / (hi - lo)
        return np.clip(wide, 0.0, 1.0).astype(np.float32)
    out = np.subtract(values, np.float32(lo), out=values)  # in place: values is our copy
    np.divide(out, np.float32(hi - lo), out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def percentiles(sample: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(sample, q)`` (linear interpolation). Unsigned integer samples (mono8,
    mono16 counts) go through a histogram: the same order statistics, found by counting
    instead of partitioning, about 4x faster on a 65k-pixel sample (0.2 vs 0.8 ms)."""
    if sample.dtype.kind != "u":
        return np.percentile(sample, q)
    flat = sample.ravel()
    cumulative = np.cumsum(np.bincount(flat))
    position = np.asarray(q, np.float64) / 100.0 * (flat.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, flat.size - 1)
    # the k-th smallest value is the first one whose cumulative count exceeds k
    low = np.searchsorted(cumulative, below, side="right").astype(np.float64)
    high = np.searchsorted(cumulative, above, side="right").astype(np.float64)
    return low + (high - low) * (position - below)


def _min_span(dtype: np.dtype) -> float:
    """The smallest meaningful range of a frame: one count for integers, a millidegree for float."""
    return 1.0 if dtype.kind in "ui" else 1e-3


def _bounds_agree(frame: tuple[float, float], state: tuple[float, float], floor: float) -> bool:
    """Whether a frame's (lo, hi) is within OUTLIER_FACTOR of the smoothed (lo, hi)."""
    span_frame = max(frame[1] - frame[0], floor)
    span_state = max(state[1] - state[0], floor)
    if max(span_frame / span_state, span_state / span_frame) > OUTLIER_FACTOR:
        return False
    reach = OUTLIER_FACTOR * span_state
    return frame[0] >= state[0] - reach and frame[1] <= state[1] + reach


def _check_reachable(dtype: np.dtype, lo: float, hi: float) -> None:
    """Raise when a fixed range lies outside every value an integer frame can hold."""
    if dtype.kind not in "ui":
        return
    info = np.iinfo(dtype)
    if info.max <= lo or info.min >= hi:
        constant = 0 if info.max <= lo else 1
        raise ValueError(
            f"thermal: fixed_range: {lo:g}..{hi:g} maps every {dtype} value "
            f"({info.min}..{info.max}) to {constant}, so the thermal image would be blank; the "
            "range is in other units (16-bit counts?): give one in this camera's units, or use "
            "the percentile scheme"
        )


class ThermalNormalizer:
    """Named, versioned thermal normalization: raw HxW frame -> float32 HxW in [0, 1].

    Schemes (raw units = counts for uint16, 0..255 for uint8, degrees for float32):
      - ``fixed_range(lo, hi)``: (x - lo) / (hi - lo), clipped. Stateless; the choice when the
        sensor is radiometric and the scene range is known.
      - ``percentile(p_lo=1, p_hi=99, ema=0.9)``: the frame's p_lo/p_hi percentiles are the
        bounds, smoothed over time as ``bound = ema * previous + (1 - ema) * frame`` so
        automatic gain does not flicker; the first frame (after ``reset()``) sets them directly.
        A frame whose bounds differ from the smoothed ones by orders of magnitude
        (``OUTLIER_FACTOR``: a driver glitch such as +-3e38 in 32FC1, a flat shutter frame) is
        normalized with the smoothed bounds and does not update them; after
        ``OUTLIER_FRAMES`` such frames in a row the new range is taken over directly.
      - ``minmax()``: the frame's own min/max (flickers; for display and stills).
    Every scheme takes ``nonfinite_fill``: None (default) rejects frames containing NaN/inf;
    a value in [0, 1] is written to those pixels instead (bounds use the finite pixels only).
    A frame with no contrast (hi <= lo) normalizes to zeros. A ``fixed_range`` that no value of
    the frame's integer type can reach (5000..12000 on a mono8 frame) would give a constant
    image; it is an error naming the range, not a silently blank thermal channel.

    ``scale_8bit``: 8-bit frames are divided by 255 instead of going through the scheme. 8-bit
    thermal (mono8 cameras, image files) has been scaled for display already, and that is how the
    training loaders read it; `recorded` sets this for a fixed range beyond every 8-bit value
    (a checkpoint's range in 16-bit counts), so one checkpoint reads both kinds of camera as it
    was trained.

    Holds the EMA state, so use one instance per stream, from one thread.
    """

    def __init__(
        self, scheme: str, params: Mapping[str, Any] | None = None, *, scale_8bit: bool = False
    ) -> None:
        if scheme not in SCHEME_VERSIONS:
            raise ValueError(
                f"unknown thermal normalization scheme {scheme!r}; "
                f"must be one of {sorted(SCHEME_VERSIONS)}"
            )
        self._scheme = scheme
        self._params = _validate_params(scheme, params or {})
        self.scale_8bit = scale_8bit
        self._bounds: tuple[float, float] | None = None
        self._state_dtype: np.dtype | None = None
        self._outliers: list[tuple[float, float]] = []  # consecutive outlier frames' bounds
        self.outlier_frames = 0  # frames whose bounds were rejected as outliers, since creation

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def version(self) -> int:
        return SCHEME_VERSIONS[self._scheme]

    @property
    def params(self) -> dict[str, float | None]:
        return dict(self._params)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(lo, hi) in raw units used for the last frame (fixed_range: always its params)."""
        if self._scheme == "fixed_range":
            return self._params["lo"], self._params["hi"]
        return self._bounds

    @property
    def state_dtype(self) -> np.dtype | None:
        """The dtype (units) the percentile state holds bounds in; None without state."""
        return self._state_dtype

    def reset(self) -> None:
        """Forget the temporal state (call on a new sequence or a sensor change)."""
        self._bounds = None
        self._state_dtype = None
        self._outliers = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalize one raw frame (HxW or HxWx1; uint8, uint16 or float32) to float32 HxW."""
        values, finite, dtype = _thermal_values(image)
        if self.scale_8bit and dtype == np.uint8:
            return np.divide(values, np.float32(255.0), out=values)
        fill = self._params["nonfinite_fill"]
        # integer counts keep their dtype for the bounds (see `percentiles`)
        sample = values if dtype.kind == "f" else image.reshape(values.shape)
        if finite is not None:
            bad = int(finite.size - np.count_nonzero(finite))
            if fill is None:
                raise ValueError(
                    f"thermal image has {bad} non-finite (NaN/inf) pixel(s) of {finite.size}; "
                    "pass nonfinite_fill=<value in [0, 1]> to replace them"
                )
            if bad == finite.size:
                raise ValueError("thermal image has no finite pixel; cannot normalize it")
            sample = values[finite]
        lo, hi = self._frame_bounds(sample, dtype)
        out = _scale(values, lo, hi)
        if finite is not None:
            out[~finite] = fill
        return out

    def _frame_bounds(self, sample: np.ndarray, dtype: np.dtype) -> tuple[float, float]:
        p = self._params
        if self._scheme == "fixed_range":
            _check_reachable(dtype, p["lo"], p["hi"])
            return p["lo"], p["hi"]
        if self._scheme == "minmax":
            self._bounds = (float(sample.min()), float(sample.max()))
            return self._bounds
        if self._state_dtype is not None and dtype != self._state_dtype:
            raise ValueError(
                f"thermal image dtype changed from {self._state_dtype} to {dtype} while the "
                "percentile EMA holds bounds in the old units; call reset() first"
            )
        if sample.size > PERCENTILE_SAMPLES:
            # A regular subsample estimates the percentiles of a thermal frame to a fraction of a
            # percent of its range (640x512 synthetic: 2-5 counts of 2150) in under a millisecond.
            step = math.ceil(math.sqrt(sample.size / PERCENTILE_SAMPLES))
            sample = sample[::step, ::step] if sample.ndim == 2 else sample[:: step * step]
        lo, hi = (float(v) for v in percentiles(sample, [p["p_lo"], p["p_hi"]]))
        if self._bounds is not None:
            if not _bounds_agree((lo, hi), self._bounds, _min_span(dtype)):
                self.outlier_frames += 1
                self._outliers.append((lo, hi))
                if len(self._outliers) < OUTLIER_FRAMES:
                    return self._bounds  # one glitch frame: keep the smoothed bounds
                # The range really changed: restart from the newest frames, unless they
                # disagree among themselves too (then keep waiting for a steady range).
                recent = self._outliers[-OUTLIER_FRAMES:]
                floor = _min_span(dtype)
                if not all(_bounds_agree(b, recent[-1], floor) for b in recent):
                    return self._bounds
                self._outliers = []
                self._bounds = (lo, hi)
                return self._bounds
            self._outliers = []
            ema = p["ema"]
            lo = ema * self._bounds[0] + (1.0 - ema) * lo
            hi = ema * self._bounds[1] + (1.0 - ema) * hi
        self._bounds = (lo, hi)
        self._state_dtype = dtype
        return self._bounds

    def to_dict(self) -> dict[str, Any]:
        """{"scheme", "version", "params"} for checkpoints and dataset manifests."""
        return {"scheme": self._scheme, "version": self.version, "params": self.params}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThermalNormalizer:
        """Rebuild from ``to_dict()`` output; refuses unknown keys and other scheme versions."""
        if not isinstance(d, Mapping):
            raise TypeError(f"thermal normalization spec must be a mapping, got {type(d).__name__}")
        keys = set(d)
        if keys != {"scheme", "version", "params"}:
            raise ValueError(
                "thermal normalization spec must have exactly the keys "
                f"['params', 'scheme', 'version'], got {sorted(keys)}"
            )
        scheme, version, params = d["scheme"], d["version"], d["params"]
        if scheme not in SCHEME_VERSIONS:
            raise ValueError(
                f"unknown thermal normalization scheme {scheme!r}; "
                f"must be one of {sorted(SCHEME_VERSIONS)}"
            )
        if version != SCHEME_VERSIONS[scheme]:
            raise ValueError(
                f"thermal scheme {scheme!r} version {version!r} is not supported; this code "
                f"implements version {SCHEME_VERSIONS[scheme]}"
            )
        if not isinstance(params, Mapping):
            raise TypeError(f"thermal spec 'params' must be a mapping, got {params!r}")
        return cls(scheme, params)

    @classmethod
    def recorded(cls, d: Mapping[str, Any]) -> ThermalNormalizer:
        """The normalizer a checkpoint or dataset manifest records (``to_dict()`` output), as the
        stream applies it: a fixed range starting at or beyond 255 (16-bit counts, typically)
        cannot have been applied to 8-bit training frames (they would all be 0), which the
        loaders divided by 255, so 8-bit frames get that (`scale_8bit`). A range that 8-bit
        values reach only in part (lo = 100 counts) is applied as it is."""
        normalizer = cls.from_dict(d)
        lo = normalizer.params.get("lo")
        normalizer.scale_8bit = normalizer.scheme == "fixed_range" and lo >= 255
        return normalizer

    def fresh_copy(self) -> ThermalNormalizer:
        """The same scheme and 8-bit rule, without this one's temporal state."""
        return ThermalNormalizer(self._scheme, self._params, scale_8bit=self.scale_8bit)

    def __repr__(self) -> str:
        eight_bit = ", 8-bit frames / 255" if self.scale_8bit else ""
        return f"ThermalNormalizer({self._scheme!r}, v{self.version}, {self._params}{eight_bit})"


@dataclass(frozen=True)
class ThermalConfig:
    """Which normalization a live stream gets: the node's ``thermal.<field>`` parameters and the
    CLIs' flags. ``normalization: checkpoint`` uses the scheme the model was trained with (and,
    when that is a fixed range in 16-bit counts, reads 8-bit frames as the training loaders did:
    divided by 255); the other fields only apply to the scheme their name starts with."""

    normalization: str = setting(
        "checkpoint",
        "thermal scheme: 'checkpoint' uses the one the model was trained with",
        choices=("checkpoint", *SCHEME_VERSIONS),
    )
    range_lo: float = setting(7000.0, "fixed_range: raw value mapped to 0")
    range_hi: float = setting(9500.0, "fixed_range: raw value mapped to 1")
    p_lo: float = setting(
        _SCHEME_PARAMS["percentile"]["p_lo"], "percentile: low percentile", low=0.0, high=100.0
    )
    p_hi: float = setting(
        _SCHEME_PARAMS["percentile"]["p_hi"], "percentile: high percentile", low=0.0, high=100.0
    )
    ema: float = setting(
        _SCHEME_PARAMS["percentile"]["ema"],
        "percentile: EMA factor of the bounds",
        low=0.0,
        high=0.999,
    )

    # field -> the scheme parameter it sets
    SCHEME_FIELDS: ClassVar[dict[str, dict[str, str]]] = {
        "fixed_range": {"range_lo": "lo", "range_hi": "hi"},
        "percentile": {"p_lo": "p_lo", "p_hi": "p_hi", "ema": "ema"},
        "minmax": {},
    }

    def __post_init__(self) -> None:
        check_fields(self, "thermal")
        if self.p_lo >= self.p_hi:
            raise ValueError("thermal.p_lo: must be below thermal.p_hi")
        if self.range_lo >= self.range_hi:
            raise ValueError("thermal.range_lo: must be below thermal.range_hi")

    def normalizer(self, trained: Mapping[str, Any] | None = None) -> ThermalNormalizer:
        """A fresh normalizer; ``trained`` is the checkpoint's ``thermal_normalization``
        (``ThermalNormalizer.to_dict()``), which ``normalization: checkpoint`` needs."""
        if self.normalization == "checkpoint":
            if trained is None:
                raise ValueError("thermal.normalization: 'checkpoint' needs a checkpoint")
            return ThermalNormalizer.recorded(trained)
        params = self.SCHEME_FIELDS[self.normalization]
        return make_normalizer(
            self.normalization, **{name: getattr(self, f) for f, name in params.items()}
        )


def make_normalizer(scheme: str, **params: Any) -> ThermalNormalizer:
    """Build a normalizer, e.g. ``make_normalizer("percentile", p_lo=2, p_hi=98, ema=0.8)``."""
    return ThermalNormalizer(scheme, params)
