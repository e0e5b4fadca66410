"""Synthetic registered RGB + thermal scenes with box labels (demo, camera simulator, tests).

Scenes are drawn procedurally with OpenCV on a textured ground plane: people and vehicles, by
day or by night. At night the RGB image is dark and noisy, so people are nearly invisible in it
while they are hot in thermal; by day RGB is informative and parked vehicles are cold, so their
thermal contrast is low. A detector therefore needs both modalities.

Two views:

* ``rotated=False``: an oblique ground camera (sky above a horizon, perspective scale), upright
  people and side views of vehicles; boxes are horizontal (angle 0).
* ``rotated=True``: a nadir UAV view; objects have arbitrary headings and the boxes are oriented.

Outputs follow the package conventions: RGB uint8 HxWx3 in RGB order; thermal as uint16 raw counts
of a 14-bit radiometric camera (background about 7000-8000 counts, people +800..1500, engines
hotter) with optical blur, temporal noise and column fixed-pattern noise; boxes float32 [N, 5] =
(cx, cy, w, h, angle) in pixels, where a pixel (i, j) covers [i, i+1) x [j, j+1). The angle
rotates the box's x-axis towards the image's +y axis (OpenCV minAreaRect style); oriented boxes
are normalised to angle in [-pi/2, pi/2) with w >= h. Boxes enclose the visible pixels of each
object (occluded and out-of-frame parts excluded); objects less than a quarter visible get no box.
Horizontal boxes lie inside the image; an oriented box of an object cut by the image edge
encloses the visible part along the object's own axes, so its corners may stick out of the frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("person", "car", "truck", "bicycle")
"""Object classes the generator can draw; ``classes=`` picks a subset and its label order."""

THERMAL_MAX_COUNT = 16383
"""Largest raw thermal count (14-bit radiometric camera)."""

THERMAL_RANGE: tuple[int, int] = (5000, 12000)
"""Raw counts spanning the generated scenes, cold night sky to truck engines: a ``fixed_range``
normalization over it keeps every object unclipped."""

_SHIFT = 4  # sub-pixel bits used for every cv2 drawing call
_ONE = 1 << _SHIFT
_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
    ],
    axis=1,
)
_BANK_PAD = 32  # noise banks are larger than the frame by this much; random offsets vary the noise
_MIN_VISIBLE_FRACTION = 0.25
_MIN_VISIBLE_PIXELS = 6
_STREAM_KEY = 0x5EED  # separates the stream world's random stream from indexed samples

_GROUND_COLOURS = (
    (74.0, 104.0, 52.0),  # grass
    (126.0, 108.0, 84.0),  # dirt
    (150.0, 150.0, 144.0),  # concrete
)
_ASPHALT = (78.0, 78.0, 84.0)
_VEHICLE_COLOURS = (
    (225.0, 225.0, 225.0),
    (30.0, 30.0, 34.0),
    (160.0, 163.0, 168.0),
    (170.0, 30.0, 30.0),
    (35.0, 60.0, 150.0),
    (95.0, 98.0, 102.0),
    (205.0, 180.0, 40.0),
)
_GLASS = (35.0, 45.0, 55.0)
_TYRE = (22.0, 22.0, 22.0)
_HEADLAMP = (225.0, 225.0, 210.0)
_TAILLAMP = (150.0, 25.0, 25.0)


@dataclass(frozen=True)
class Scene:
    """One registered RGB + thermal frame with its labels.

    rgb: uint8 HxWx3, RGB order. thermal_raw: uint16 HxW raw counts (0..16383).
    boxes: float32 [N, 5] (cx, cy, w, h, angle) in pixels. labels: int64 [N], indices into
    class_names. is_night: whether the frame was rendered at night. semantic: uint8 HxW, 0 for
    background and k + 1 where an object of class k is drawn (every drawn pixel, also of objects
    too small or hidden to get a box).
    """

    rgb: np.ndarray
    thermal_raw: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    is_night: bool
    semantic: np.ndarray


@dataclass(frozen=True)
class _Part:
    """One drawable piece of an object, in metres in the object's own frame."""

    points: np.ndarray  # [K, 2]
    rgb: tuple[float, float, float]
    heat: float  # counts above the ambient temperature
    stroke: float = 0.0  # line width in metres; 0 draws a filled polygon
    closed: bool = True
    light: tuple[float, float, float] | None = None  # emitted colour at night


@dataclass
class _Actor:
    """An object instance: class, pose, appearance and motion."""

    kind: str
    x: float  # ground view: foot point; UAV view: centre (pixels)
    y: float
    heading: float  # radians; the ground view only uses its sign (facing left or right)
    length: float  # metres along the heading (height for people in the ground view)
    width: float  # metres across (UAV view) or height (ground-view vehicles)
    speed: float  # metres per second
    running: bool
    main: tuple[float, float, float]
    second: tuple[float, float, float]
    heat: float
    hot: float
    cold: float
    phase: float


@dataclass
class _World:
    """Everything static about a scene: lighting, background layers and the actors."""

    is_night: bool
    ambient: float
    background_rgb: np.ndarray  # float32 HxWx3 reflectance, 0..255 under daylight
    background_thermal: np.ndarray  # float32 HxW counts
    lamps: np.ndarray  # float32 h x w x 3 low-resolution night illumination (zeros by day)
    day_gain: float
    rgb_noise: float
    thermal_noise: float
    horizon: float  # ground view: image row of the horizon
    scale: float  # ground view: px per metre at the bottom row; UAV view: px per metre
    actors: list[_Actor]


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def _ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return (_CIRCLE * (ax, ay) + (cx, cy)).astype(np.float32)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, np.float32)


def _le90(w: float, h: float, angle: float) -> tuple[float, float, float]:
    """Canonical oriented box: w >= h and angle in [-pi/2, pi/2)."""
    if w < h:
        w, h, angle = h, w, angle + math.pi / 2
    return w, h, (angle + math.pi / 2) % math.pi - math.pi / 2


def _person_parts(a: _Actor, top_view: bool, distance: float) -> list[_Part]:
    skin = (a.second[0] * 0.4 + 120, a.second[1] * 0.3 + 85, a.second[2] * 0.3 + 65)
    if top_view:
        return [
            _Part(_ellipse(0.0, 0.0, 0.13, 0.24), a.main, a.heat),
            _Part(_ellipse(0.02, 0.0, 0.1, 0.1), (40.0, 32.0, 28.0), a.hot),
        ]
    h = a.length
    swing = 0.16 * h * math.sin(a.phase + distance * 2 * math.pi / 1.4) if a.speed > 0 else 0.0
    legs = [
        _Part(
            _poly((s * 0.03 * h, 0.5 * h), (s * swing, 0.03 * h)),
            a.second,
            0.85 * a.heat,
            0.085 * h,
            False,
        )
        for s in (-1.0, 1.0)
    ]
    arms = [
        _Part(
            _poly((s * 0.11 * h, 0.8 * h), (s * (0.13 * h - 0.6 * swing), 0.5 * h)),
            a.main,
            0.9 * a.heat,
            0.055 * h,
            False,
        )
        for s in (-1.0, 1.0)
    ]
    torso = _Part(_ellipse(0.0, 0.68 * h, 0.12 * h, 0.2 * h), a.main, a.heat)
    head = _Part(_ellipse(0.0, 0.905 * h, 0.065 * h, 0.07 * h), skin, a.hot)
    return [*legs, torso, *arms, head]


def _car_parts(a: _Actor, top_view: bool) -> list[_Part]:
    L, W = a.length, a.width
    body_heat, hood_heat = a.heat, a.hot
    tyre_heat = 0.35 * a.hot if a.running else a.heat
    darker = (a.main[0] * 0.85, a.main[1] * 0.85, a.main[2] * 0.85)
    if top_view:
        return [
            _Part(_rect(-L / 2, -W / 2, L / 2, W / 2), a.main, body_heat),
            _Part(_rect(0.22 * L, -0.46 * W, 0.5 * L, 0.46 * W), a.main, hood_heat),
            _Part(_rect(0.08 * L, -0.43 * W, 0.22 * L, 0.43 * W), _GLASS, a.cold),
            _Part(_rect(-0.28 * L, -0.43 * W, 0.08 * L, 0.43 * W), darker, body_heat),
            _Part(_rect(-0.38 * L, -0.43 * W, -0.28 * L, 0.43 * W), _GLASS, a.cold),
            _Part(
                _rect(0.46 * L, -0.45 * W, 0.5 * L, -0.25 * W),
                _HEADLAMP,
                hood_heat,
                light=(255.0, 250.0, 225.0),
            ),
            _Part(
                _rect(0.46 * L, 0.25 * W, 0.5 * L, 0.45 * W),
                _HEADLAMP,
                hood_heat,
                light=(255.0, 250.0, 225.0),
            ),
        ]
    top = W
    wheel = 0.33
    return [
        _Part(
            _poly((-L / 2, 0.3), (L / 2, 0.3), (L / 2, 0.75), (0.42 * L, 0.88), (-L / 2, 0.9)),
            a.main,
            body_heat,
        ),
        _Part(
            _poly((-0.34 * L, 0.9), (0.22 * L, 0.88), (0.08 * L, top), (-0.26 * L, top)),
            darker,
            body_heat,
        ),
        _Part(
            _poly(
                (-0.3 * L, 0.95), (0.18 * L, 0.93), (0.065 * L, top - 0.07), (-0.24 * L, top - 0.07)
            ),
            _GLASS,
            a.cold,
        ),
        _Part(_rect(0.25 * L, 0.32, 0.5 * L, 0.85), a.main, hood_heat),
        _Part(_ellipse(0.3 * L, wheel, wheel, wheel), _TYRE, tyre_heat),
        _Part(_ellipse(-0.3 * L, wheel, wheel, wheel), _TYRE, tyre_heat),
        _Part(
            _rect(0.47 * L, 0.6, 0.5 * L, 0.72), _HEADLAMP, hood_heat, light=(255.0, 250.0, 225.0)
        ),
        _Part(
            _rect(-0.5 * L, 0.62, -0.47 * L, 0.74), _TAILLAMP, body_heat, light=(255.0, 40.0, 30.0)
        ),
    ]


def _truck_parts(a: _Actor, top_view: bool) -> list[_Part]:
    L, W = a.length, a.width
    cab_heat, engine_heat = a.heat, a.hot
    cargo_heat = 0.3 * a.heat if a.running else a.heat
    tyre_heat = 0.3 * a.hot if a.running else a.heat
    f = L / 2
    if top_view:
        return [
            _Part(_rect(-f, -1.25, f - 2.3, 1.25), a.main, cargo_heat),
            _Part(_rect(f - 2.2, -1.15, f, 1.15), a.second, engine_heat * 0.6),
            _Part(_rect(f - 0.7, -1.05, f - 0.35, 1.05), _GLASS, a.cold),
            _Part(
                _rect(f - 0.08, -1.1, f, -0.8), _HEADLAMP, engine_heat, light=(255.0, 250.0, 225.0)
            ),
            _Part(
                _rect(f - 0.08, 0.8, f, 1.1), _HEADLAMP, engine_heat, light=(255.0, 250.0, 225.0)
            ),
        ]
    top = W
    wheel = 0.5
    return [
        _Part(_rect(-f, 0.55, f - 2.3, top), a.main, cargo_heat),
        _Part(
            _poly((f - 2.2, 0.55), (f, 0.55), (f, 2.2), (f - 0.4, 2.9), (f - 2.2, 2.9)),
            a.second,
            cab_heat,
        ),
        _Part(
            _poly((f - 0.9, 1.9), (f - 0.12, 1.9), (f - 0.42, 2.7), (f - 0.9, 2.7)), _GLASS, a.cold
        ),
        _Part(_rect(f - 1.6, 0.6, f, 1.6), a.second, engine_heat),
        *(
            _Part(_ellipse(x, wheel, wheel, wheel), _TYRE, tyre_heat)
            for x in (f - 1.2, -f + 1.5, -f + 2.6)
        ),
        _Part(_rect(f - 0.05, 1.0, f, 1.2), _HEADLAMP, engine_heat, light=(255.0, 250.0, 225.0)),
        _Part(_rect(-f, 0.7, -f + 0.06, 0.9), _TAILLAMP, cargo_heat, light=(255.0, 40.0, 30.0)),
    ]


def _bicycle_parts(a: _Actor, top_view: bool) -> list[_Part]:
    if top_view:
        return [
            _Part(_poly((-0.85, 0.0), (0.85, 0.0)), a.main, a.heat, 0.07, False),
            _Part(_poly((0.6, -0.28), (0.6, 0.28)), _TYRE, a.heat, 0.05, False),
        ]
    r = 0.34
    frame = _poly((-0.52, r), (-0.1, r), (0.3, 0.78), (-0.2, 0.8), (-0.1, r))
    return [
        _Part(_ellipse(-0.52, r, r, r), _TYRE, a.heat, 0.05),
        _Part(_ellipse(0.52, r, r, r), _TYRE, a.heat, 0.05),
        _Part(frame, a.main, a.heat, 0.045, False),
        _Part(_poly((0.3, 0.78), (0.52, r)), a.main, a.heat, 0.04, False),
        _Part(_poly((0.3, 0.78), (0.34, 0.98), (0.22, 1.0)), _TYRE, a.heat, 0.04, False),
        _Part(_poly((-0.2, 0.8), (-0.24, 0.95)), a.main, a.heat, 0.04, False),
        _Part(_poly((-0.36, 0.96), (-0.12, 0.96)), _TYRE, a.heat, 0.06, False),
    ]


# Nominal (length, width) in metres: width is the height for ground-view vehicles.
_DIMENSIONS = {
    "person": ((1.55, 1.9), (0.5, 0.5)),
    "car": ((4.0, 4.8), (1.45, 1.6)),
    "truck": ((7.0, 10.0), (3.0, 3.6)),
    "bicycle": ((1.7, 1.85), (1.0, 1.0)),
}
_TOP_WIDTH = {"person": (0.5, 0.5), "car": (1.7, 1.9), "truck": (2.3, 2.5), "bicycle": (0.6, 0.6)}
_SPEED = {"person": (0.8, 1.7), "car": (3.0, 10.0), "truck": (3.0, 8.0), "bicycle": (2.5, 5.0)}


class SceneGenerator:
    """Seeded generator of registered RGB + thermal scenes with box labels.

    width, height: image size in pixels (>= 32 each). classes: names from CLASS_NAMES; their
    order defines the label indices. seed: makes every output reproducible. night_probability:
    chance that a scene is rendered at night. rotated: UAV nadir view with oriented boxes instead
    of the oblique ground view. max_objects: upper bound of objects per scene (0..200).

    ``sample()`` draws independent scenes; ``sample(index)`` returns a scene that depends only
    on (seed, index, settings). ``render(t)`` and ``sequence()`` show one fixed world whose
    objects move smoothly, for a simulated camera stream.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 512,
        classes: Sequence[str] = ("person", "car"),
        seed: int = 0,
        night_probability: float = 0.5,
        rotated: bool = False,
        max_objects: int = 8,
    ) -> None:
        if int(width) != width or width < 32:
            raise ValueError(f"width must be an integer >= 32, got {width!r}")
        if int(height) != height or height < 32:
            raise ValueError(f"height must be an integer >= 32, got {height!r}")
        classes = tuple(classes)
        if not classes:
            raise ValueError("classes must name at least one class, got an empty sequence")
        unknown = [c for c in classes if c not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"classes contains unknown names {unknown}; choose from {CLASS_NAMES}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must not repeat a name, got {classes}")
        if not 0.0 <= night_probability <= 1.0:
            raise ValueError(f"night_probability must be in [0, 1], got {night_probability!r}")
        if int(max_objects) != max_objects or not 0 <= max_objects <= 200:
            raise ValueError(f"max_objects must be an integer in [0, 200], got {max_objects!r}")
        self.width = int(width)
        self.height = int(height)
        self.classes = classes
        self.seed = int(seed)
        self.night_probability = float(night_probability)
        self.rotated = bool(rotated)
        self.max_objects = int(max_objects)
        self._rng = np.random.default_rng([self.seed])
        bank_rng = np.random.default_rng([self.seed, 1])
        shape = (self.height + _BANK_PAD, self.width + _BANK_PAD)
        texture = bank_rng.standard_normal(shape, dtype=np.float32)
        texture = cv2.GaussianBlur(texture, (0, 0), 1.2)
        self._texture_bank = texture / max(float(texture.std()), 1e-6)
        self._rgb_noise_bank = bank_rng.standard_normal((*shape, 3), dtype=np.float32)
        self._thermal_noise_bank = bank_rng.standard_normal(shape, dtype=np.float32)
        # Column fixed-pattern noise of the thermal sensor, tiled to a frame for one cv2.add.
        columns = bank_rng.normal(0.0, 6.0, self.width).astype(np.float32)
        self._column_pattern = np.ascontiguousarray(
            np.broadcast_to(columns, (self.height, self.width))
        )
        self._stream_world: _World | None = None

    def sample(self, index: int | None = None) -> Scene:
        """A random static scene; with ``index`` it depends only on (seed, index, settings)."""
        if index is None:
            rng = self._rng
        else:
            if int(index) != index or index < 0:
                raise ValueError(f"index must be a non-negative integer, got {index!r}")
            rng = np.random.default_rng([self.seed, 2, int(index)])
        world = self._make_world(rng, moving=False)
        return self._render(world, 0.0, rng)

    def render(self, t_seconds: float) -> Scene:
        """The stream world at time ``t_seconds`` (>= 0); objects move smoothly and re-enter."""
        if not math.isfinite(t_seconds) or t_seconds < 0:
            raise ValueError(f"t_seconds must be a finite number >= 0, got {t_seconds!r}")
        if self._stream_world is None:
            self._stream_world = self._make_world(
                np.random.default_rng([self.seed, _STREAM_KEY]), moving=True
            )
        noise_rng = np.random.default_rng([self.seed, _STREAM_KEY, round(t_seconds * 1e6)])
        return self._render(self._stream_world, float(t_seconds), noise_rng)

    def sequence(self, num_frames: int | None = None, fps: float = 30.0) -> Iterator[Scene]:
        """Frames ``render(i / fps)`` for i = 0..num_frames-1, or forever when num_frames is None."""
        if num_frames is not None and (int(num_frames) != num_frames or num_frames < 0):
            raise ValueError(
                f"num_frames must be a non-negative integer or None, got {num_frames!r}"
            )
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        index = 0
        while num_frames is None or index < num_frames:
            yield self.render(index / fps)
            index += 1

    # ---------------------------------------------------------------- world construction

    def _make_world(self, rng: np.random.Generator, moving: bool) -> _World:
        H = self.height
        is_night = bool(rng.random() < self.night_probability)
        ambient = float(rng.uniform(7000, 7500) if is_night else rng.uniform(7400, 8000))
        horizon = 0.0 if self.rotated else float(rng.uniform(0.18, 0.35) * H)
        if self.rotated:
            scale = float(0.024 * H * rng.uniform(0.8, 1.25))
        else:
            scale = 0.32 * H / 1.75 * float(rng.uniform(0.85, 1.15))
        rgb, thermal = self._background(rng, is_night, ambient, horizon, scale)
        lamps = self._lamp_map(rng, horizon) if is_night else np.zeros((1, 1, 3), np.float32)
        world = _World(
            is_night=is_night,
            ambient=ambient,
            background_rgb=rgb,
            background_thermal=thermal,
            lamps=lamps,
            day_gain=float(rng.uniform(0.85, 1.15)),
            rgb_noise=float(rng.uniform(4.5, 7.0) if is_night else rng.uniform(1.5, 3.0)),
            thermal_noise=float(rng.uniform(10.0, 20.0)),
            horizon=horizon,
            scale=scale,
            actors=[],
        )
        low = min(self.max_objects, max(1, self.max_objects // 2)) if moving else 0
        count = int(rng.integers(low, self.max_objects + 1))
        extents: list[tuple[float, float, float, float]] = []
        for _ in range(count):
            kind = self.classes[int(rng.integers(len(self.classes)))]
            for _attempt in range(20):
                actor = self._new_actor(rng, world, kind, moving)
                box = self._extent(world, actor, 0.0)
                if all(_overlap(box, other) < 0.15 for other in extents):
                    world.actors.append(actor)
                    extents.append(box)
                    break
        return world

    def _background(
        self, rng: np.random.Generator, is_night: bool, ambient: float, horizon: float, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground (+ sky in the ground view) reflectance and temperature with shared texture."""
        H, W = self.height, self.width
        ground = _GROUND_COLOURS[int(rng.integers(len(_GROUND_COLOURS)))]
        rgb = np.empty((H, W, 3), np.float32)
        rgb[:] = ground
        thermal = np.full((H, W), ambient, np.float32)
        road_heat = float(rng.uniform(100, 300) if is_night else rng.uniform(300, 700))
        patches = int(rng.integers(0, 4))
        for _ in range(patches):
            colour = _GROUND_COLOURS[int(rng.integers(len(_GROUND_COLOURS)))]
            cx, cy = rng.uniform(0, W), rng.uniform(horizon, H)
            half = rng.uniform(0.08, 0.3, 2) * (W, H)
            angle = rng.uniform(0, np.pi) if self.rotated else 0.0
            pts = _rotated_rect_points(cx, cy, half[0], half[1], angle)
            heat = float(rng.uniform(-150, 250))
            _fill(rgb, pts, colour)
            _fill(thermal, pts, (ambient + heat,))
        if self.rotated:
            road_width = float(rng.uniform(7, 14) * scale)
            cx, cy, angle = (
                rng.uniform(0.2, 0.8) * W,
                rng.uniform(0.2, 0.8) * H,
                rng.uniform(0, np.pi),
            )
        else:
            road_width = float(rng.uniform(0.06, 0.15) * (H - horizon))
            cx, cy, angle = (
                W / 2,
                horizon + rng.uniform(0.35, 0.7) * (H - horizon),
                rng.uniform(-0.08, 0.08),
            )
        length = 2.0 * (W + H)
        road = _rotated_rect_points(cx, cy, length / 2, road_width / 2, angle)
        _fill(rgb, road, _ASPHALT)
        _fill(thermal, road, (ambient + road_heat,))
        direction = np.array([math.cos(angle), math.sin(angle)])
        dash = max(road_width * 0.6, 2.0)
        reach = int(math.hypot(W, H) / (3 * dash)) + 1  # dashes beyond this are off-screen
        for k in range(-reach, reach + 1):
            c = np.array([cx, cy]) + direction * k * 3 * dash
            pts = _rotated_rect_points(c[0], c[1], dash / 2, max(road_width * 0.03, 0.6), angle)
            _fill(rgb, pts, (200.0, 200.0, 190.0))
            _fill(thermal, pts, (ambient + road_heat - 60,))
        if horizon > 0:
            top = math.ceil(horizon)
            sky = (135.0, 175.0, 225.0) if not is_night else (60.0, 70.0, 110.0)
            rgb[:top] = sky
            thermal[:top] = ambient - float(rng.uniform(1000, 1600))
        low = cv2.resize(
            rng.standard_normal((max(2, H // 48), max(2, W // 48)), dtype=np.float32),
            (W, H),
            interpolation=cv2.INTER_CUBIC,
        )
        oy, ox = (int(v) for v in rng.integers(0, _BANK_PAD + 1, 2))
        fine = self._texture_bank[oy : oy + H, ox : ox + W]
        texture = cv2.addWeighted(low, 0.1, fine, 0.06, 1.0)
        cv2.multiply(rgb, cv2.cvtColor(texture, cv2.COLOR_GRAY2RGB), dst=rgb)
        cv2.scaleAdd(low, 110.0, thermal, dst=thermal)
        cv2.scaleAdd(fine, 25.0, thermal, dst=thermal)
        return rgb, thermal

    def _lamp_map(self, rng: np.random.Generator, horizon: float) -> np.ndarray:
        """Low-resolution night illumination: dim ambient light plus a few sodium street lamps."""
        h, w = max(2, self.height // 8), max(2, self.width // 8)
        lamps = np.empty((h, w, 3), np.float32)
        lamps[:] = rng.uniform(0.04, 0.09)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(int(rng.integers(0, 3))):
            cx, cy = rng.uniform(0, w), rng.uniform(horizon / 8, h)
            radius = rng.uniform(0.08, 0.18) * max(h, w)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)) * rng.uniform(
                0.25, 0.5
            )
            lamps += blob[:, :, None] * np.array([1.0, 0.78, 0.45], np.float32)
        return lamps

    def _new_actor(
        self, rng: np.random.Generator, world: _World, kind: str, moving: bool
    ) -> _Actor:
        H, W = self.height, self.width
        length = float(rng.uniform(*_DIMENSIONS[kind][0]))
        width = float(rng.uniform(*(_TOP_WIDTH[kind] if self.rotated else _DIMENSIONS[kind][1])))
        if self.rotated:
            reach = 0.5 * math.hypot(length, width) * world.scale
            margin = -0.3 * reach if rng.random() < 0.15 else reach
            x = float(rng.uniform(min(margin, W / 2), max(W - margin, W / 2)))
            y = float(rng.uniform(min(margin, H / 2), max(H - margin, H / 2)))
            heading = float(rng.uniform(-np.pi, np.pi))
        else:
            span = H - world.horizon
            extent = length if kind != "person" else 0.45
            far, near = 0.2, min(1.0, 0.6 * W / (extent * world.scale))
            depth = float(rng.uniform(far, max(far, near)))
            y = world.horizon + depth * span
            reach = 0.5 * extent * world.scale * depth
            margin = -0.3 * reach if rng.random() < 0.15 else reach
            x = float(rng.uniform(min(margin, W / 2), max(W - margin, W / 2)))
            heading = 0.0 if rng.random() < 0.5 else math.pi
        moves = moving and (kind in ("person", "bicycle") or rng.random() < 0.7)
        running = moves or (kind in ("car", "truck") and not moving and rng.random() < 0.5)
        speed = float(rng.uniform(*_SPEED[kind])) if moves else 0.0
        if kind == "person":
            main = tuple(float(v) for v in rng.uniform(20, 230, 3))
            heat = float(rng.uniform(800, 1500))
            hot = heat + float(rng.uniform(200, 500))
            cold = 0.0
        else:
            main = _VEHICLE_COLOURS[int(rng.integers(len(_VEHICLE_COLOURS)))]
            cold = float(rng.uniform(-350, -150))
            if kind == "bicycle":
                heat = hot = float(rng.uniform(-40, 80))
            elif running:
                heat = float(rng.uniform(250, 600))
                hot = float(rng.uniform(1500, 3000) if kind == "car" else rng.uniform(2000, 3500))
            else:  # parked: near ambient by day (low thermal contrast), below it at night
                heat = hot = float(
                    rng.uniform(-350, -50) if world.is_night else rng.uniform(-150, 150)
                )
        second = tuple(float(v) for v in rng.uniform(15, 200, 3))
        return _Actor(
            kind=kind,
            x=x,
            y=y,
            heading=heading,
            length=length,
            width=width,
            speed=speed,
            running=running,
            main=main,
            second=second,
            heat=heat,
            hot=hot,
            cold=cold,
            phase=float(rng.uniform(0, 2 * np.pi)),
        )

    # ---------------------------------------------------------------- rendering

    def _pose(self, world: _World, actor: _Actor, t: float) -> tuple[float, float, float]:
        """Actor position (pixels) and px-per-metre scale at time t; moving actors wrap around."""
        if self.rotated:
            scale = world.scale
            distance = actor.speed * t * scale
            x = actor.x + math.cos(actor.heading) * distance
            y = actor.y + math.sin(actor.heading) * distance
            reach = 0.5 * math.hypot(actor.length, actor.width) * scale
            x = _wrap(x, -reach, self.width + reach)
            y = _wrap(y, -reach, self.height + reach)
            return x, y, scale
        scale = world.scale * (actor.y - world.horizon) / (self.height - world.horizon)
        reach = 0.5 * actor.length * scale
        direction = 1.0 if math.cos(actor.heading) > 0 else -1.0
        x = _wrap(actor.x + direction * actor.speed * t * scale, -reach, self.width + reach)
        return x, actor.y, scale

    def _parts(self, actor: _Actor, t: float) -> list[_Part]:
        top = self.rotated
        if actor.kind == "person":
            return _person_parts(actor, top, actor.speed * t)
        if actor.kind == "car":
            return _car_parts(actor, top)
        if actor.kind == "truck":
            return _truck_parts(actor, top)
        return _bicycle_parts(actor, top)

    def _to_pixels(
        self, actor: _Actor, points: np.ndarray, x: float, y: float, scale: float
    ) -> np.ndarray:
        if self.rotated:
            c, s = math.cos(actor.heading), math.sin(actor.heading)
            px = x + (c * points[:, 0] - s * points[:, 1]) * scale
            py = y + (s * points[:, 0] + c * points[:, 1]) * scale
        else:
            direction = 1.0 if math.cos(actor.heading) > 0 else -1.0
            px = x + direction * points[:, 0] * scale
            py = y - points[:, 1] * scale
        return np.stack([px, py], axis=1)

    def _extent(self, world: _World, actor: _Actor, t: float) -> tuple[float, float, float, float]:
        x, y, scale = self._pose(world, actor, t)
        pts = np.concatenate(
            [self._to_pixels(actor, p.points, x, y, scale) for p in self._parts(actor, t)]
        )
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )

    def _render(self, world: _World, t: float, rng: np.random.Generator) -> Scene:
        H, W = self.height, self.width
        reflectance = world.background_rgb.copy()
        thermal = world.background_thermal.copy()
        ids = np.zeros((H, W), np.uint8)
        poses = [self._pose(world, a, t) for a in world.actors]
        order = (
            sorted(range(len(world.actors)), key=lambda i: poses[i][1])
            if not self.rotated
            else list(range(len(world.actors)))
        )
        lights: list[tuple[np.ndarray, tuple[float, float, float]]] = []
        headlights = np.zeros_like(world.lamps) if world.is_night else None
        drawn: dict[int, tuple[int, int, int, int, int]] = {}
        for rank, i in enumerate(order):
            actor, (x, y, scale) = world.actors[i], poses[i]
            label_id = rank + 1
            all_px = []
            parts = self._parts(actor, t)
            for part in parts:
                px = self._to_pixels(actor, part.points, x, y, scale)
                all_px.append(px)
                pts = np.round(px * _ONE).astype(np.int32)
                thickness = max(1, round(part.stroke * scale)) if part.stroke > 0 else 0
                for image, value in (
                    (reflectance, part.rgb),
                    (thermal, (world.ambient + part.heat,)),
                    (ids, (label_id,)),
                ):
                    if thickness:
                        cv2.polylines(
                            image, [pts], part.closed, value, thickness, cv2.LINE_8, _SHIFT
                        )
                    else:
                        cv2.fillPoly(image, [pts], value, cv2.LINE_8, shift=_SHIFT)
                if part.light is not None and world.is_night and actor.running:
                    lights.append((pts, part.light))
            if headlights is not None and actor.running and actor.kind in ("car", "truck"):
                self._add_headlight(headlights, actor, x, y, scale)
            stacked = np.concatenate(all_px)
            pad = 2 + max(p.stroke for p in parts) * scale
            x0, y0 = max(0, int(stacked[:, 0].min() - pad)), max(0, int(stacked[:, 1].min() - pad))
            x1, y1 = (
                min(W, int(stacked[:, 0].max() + pad) + 1),
                min(H, int(stacked[:, 1].max() + pad) + 1),
            )
            if x1 > x0 and y1 > y0:
                count = int(np.count_nonzero(ids[y0:y1, x0:x1] == label_id))
                drawn[label_id] = (x0, y0, x1, y1, count)
        boxes, labels = self._boxes(world, order, ids, drawn)
        rgb = self._light_rgb(world, reflectance, headlights, lights, rng)
        raw = self._sense_thermal(world, thermal, rng)
        # drawing rank + 1 -> class index + 1
        classes = [0] + [self.classes.index(world.actors[i].kind) + 1 for i in order]
        return Scene(
            rgb=rgb,
            thermal_raw=raw,
            boxes=boxes,
            labels=labels,
            class_names=self.classes,
            is_night=world.is_night,
            semantic=np.asarray(classes, np.uint8)[ids],
        )

    def _add_headlight(
        self, light_map: np.ndarray, actor: _Actor, x: float, y: float, scale: float
    ) -> None:
        """Light cone of a running vehicle on the ground ahead of it (night only)."""
        h, w = light_map.shape[:2]
        sx, sy = w / self.width, h / self.height
        if self.rotated:
            ahead = (0.5 * actor.length + 3.0) * scale
            cx, cy = x + math.cos(actor.heading) * ahead, y + math.sin(actor.heading) * ahead
        else:
            direction = 1.0 if math.cos(actor.heading) > 0 else -1.0
            cx, cy = x + direction * (0.5 * actor.length + 2.0) * scale, y
        radius = max(1, round(2.5 * scale * sx))
        cv2.circle(light_map, (round(cx * sx), round(cy * sy)), radius, (0.45, 0.45, 0.4), -1)

    def _boxes(
        self,
        world: _World,
        order: list[int],
        ids: np.ndarray,
        drawn: dict[int, tuple[int, int, int, int, int]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes around the visible pixels of each object that is at least a quarter visible."""
        boxes: list[tuple[float, float, float, float, float]] = []
        labels: list[int] = []
        for label_id, (x0, y0, x1, y1, count) in drawn.items():
            ys, xs = np.nonzero(ids[y0:y1, x0:x1] == label_id)
            if len(xs) < max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * count):
                continue
            actor = world.actors[order[label_id - 1]]
            if self.rotated:
                c, s = math.cos(actor.heading), math.sin(actor.heading)
                px, py = xs + (x0 + 0.5), ys + (y0 + 0.5)
                along, across = px * c + py * s, -px * s + py * c
                half = 0.5 * (abs(c) + abs(s))  # half-extent of a pixel square on either axis
                a0, a1 = along.min() - half, along.max() + half
                b0, b1 = across.min() - half, across.max() + half
                ma, mb = (a0 + a1) / 2, (b0 + b1) / 2
                w, h, angle = _le90(float(a1 - a0), float(b1 - b0), actor.heading)
                boxes.append((float(ma * c - mb * s), float(ma * s + mb * c), w, h, angle))
            else:
                bx0, bx1 = xs.min() + x0, xs.max() + x0 + 1
                by0, by1 = ys.min() + y0, ys.max() + y0 + 1
                boxes.append(
                    ((bx0 + bx1) / 2, (by0 + by1) / 2, float(bx1 - bx0), float(by1 - by0), 0.0)
                )
            labels.append(self.classes.index(actor.kind))
        return np.array(boxes, np.float32).reshape(-1, 5), np.array(labels, np.int64)

    def _light_rgb(
        self,
        world: _World,
        reflectance: np.ndarray,
        headlights: np.ndarray | None,
        lights: list[tuple[np.ndarray, tuple[float, float, float]]],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Illuminate, add lamps and optics blur, then sensor noise; uint8 RGB."""
        H, W = self.height, self.width
        if world.is_night:
            illumination = world.lamps
            if headlights is not None:
                illumination = illumination + cv2.GaussianBlur(headlights, (0, 0), 1.5)
            reflectance *= cv2.resize(illumination, (W, H), interpolation=cv2.INTER_LINEAR)
            for pts, colour in lights:
                cv2.fillPoly(reflectance, [pts], colour, cv2.LINE_8, shift=_SHIFT)
        image = cv2.GaussianBlur(reflectance, (3, 3), 0.7)
        gain = 1.0 if world.is_night else world.day_gain
        noise = self._noise(self._rgb_noise_bank, rng)
        return cv2.addWeighted(image, gain, noise, world.rgb_noise, 0.0, dtype=cv2.CV_8U)

    def _sense_thermal(
        self, world: _World, thermal: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Optics blur, temporal and column noise; uint16 counts clipped to the 14-bit range."""
        image = cv2.GaussianBlur(thermal, (5, 5), 1.0)
        cv2.scaleAdd(
            self._noise(self._thermal_noise_bank, rng), world.thermal_noise, image, dst=image
        )
        counts = cv2.add(image, self._column_pattern, dtype=cv2.CV_16U)  # rounds, saturates at 0
        return np.minimum(counts, THERMAL_MAX_COUNT, out=counts)

    def _noise(self, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A frame-sized window of a noise bank at a random offset (no new random field)."""
        oy, ox = (int(v) for v in rng.integers(0, _BANK_PAD + 1, 2))
        return bank[oy : oy + self.height, ox : ox + self.width]


def _wrap(value: float, low: float, high: float) -> float:
    return low + (value - low) % (high - low)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection area over the smaller of two (x0, y0, x1, y1) rectangles."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-6)


def _rotated_rect_points(
    cx: float, cy: float, half_w: float, half_h: float, angle: float
) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    local = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    return np.stack(
        [cx + local[:, 0] * c - local[:, 1] * s, cy + local[:, 0] * s + local[:, 1] * c], axis=1
    )


def _fill(image: np.ndarray, points: np.ndarray, value: tuple[float, ...]) -> None:
    cv2.fillPoly(image, [np.round(points * _ONE).astype(np.int32)], value, cv2.LINE_8, shift=_SHIFT)
