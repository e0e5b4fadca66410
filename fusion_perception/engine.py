"""Checkpoint -> ready-to-run network: letterbox preprocessing, one forward pass, results in RGB pixels.

The engine is ROS-free so the node, `fusion-infer`, the evaluator and the benchmarks share it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from fusion_perception.backends import frame_tensors, load_backend
from fusion_perception.checkpoint import Checkpoint, load_checkpoint
from fusion_perception.colour import merge_fused_luma
from fusion_perception.compensation import Compensation, load_compensation
from fusion_perception.model.compensation import CompensationNet
from fusion_perception.model.pyramid_fusion import fuse_pyramid, levels_for_size
from fusion_perception.model.unifusod import LUMA


def tune_cpu_allocator() -> bool:
    """Keep large activation buffers in the heap between forward passes (glibc only).

    By default glibc returns every allocation above 128 KB to the OS with munmap and maps it again
    on the next pass; for a small network on a CPU that page-fault churn costs about as much as the
    convolutions (nano at 640x512: ~110 ms -> ~60 ms here). Raising the mmap and trim thresholds
    makes the allocator reuse the memory. Process-wide, so only the engine's owner calls it.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(
        libc.mallopt(m_trim_threshold, 1 << 30)
    )


def select_device(requested: str = "auto") -> torch.device:
    """'auto' takes CUDA when present; an explicit 'cuda' without a GPU is an error, not a fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {requested!r} is not 'auto', 'cpu' or 'cuda[:N]'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {requested!r} requested but CUDA is not available")
    return device


@dataclass(frozen=True)
class Letterbox:
    """Maps between an original image and the network input (uniform scale, then centred padding)."""

    scale: float
    pad_x: int
    pad_y: int
    width: int  # original
    height: int

    @classmethod
    def fit(cls, width: int, height: int, input_width: int, input_height: int) -> Letterbox:
        """Raises ValueError ("size: ...") for a frame whose shorter side would shrink below one
        pixel (a 4096x1 line scan into 320x256), which OpenCV would meet with an assertion."""
        if width <= 0 or height <= 0:
            raise ValueError(f"size: empty image ({width}x{height})")
        scale = min(input_width / width, input_height / height)
        new_w, new_h = round(width * scale), round(height * scale)
        if new_w < 1 or new_h < 1:
            ratio = max(width / height, height / width)
            raise ValueError(
                f"size: a {width}x{height} image (aspect ratio {ratio:.0f}:1) is too elongated "
                f"for the network input {input_width}x{input_height}: letterboxing would shrink "
                f"it to {new_w}x{new_h} px"
            )
        return cls(scale, (input_width - new_w) // 2, (input_height - new_h) // 2, width, height)

    @property
    def content_size(self) -> tuple[int, int]:
        return round(self.width * self.scale), round(self.height * self.scale)

    def apply(self, image: np.ndarray, input_size: tuple[int, int], fill: float) -> np.ndarray:
        """Resize `image` (HxW or HxWxC) and pad it to `input_size` (width, height); an image
        that already has the input size is returned as it is (not copied)."""
        new_w, new_h = self.content_size
        if (new_w, new_h) == (image.shape[1], image.shape[0]) == tuple(input_size):
            return image
        if (new_w, new_h) != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out_shape = (input_size[1], input_size[0], *image.shape[2:])
        out = np.full(out_shape, fill, dtype=image.dtype)
        out[self.pad_y : self.pad_y + new_h, self.pad_x : self.pad_x + new_w] = image
        return out

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """[N,5] (cx, cy, w, h, angle) in network pixels -> original image pixels."""
        out = boxes.astype(np.float64, copy=True)
        out[:, 0] = (out[:, 0] - self.pad_x) / self.scale
        out[:, 1] = (out[:, 1] - self.pad_y) / self.scale
        out[:, 2:4] /= self.scale
        return out

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.astype(np.float64, copy=True)
        out[:, 0] = out[:, 0] * self.scale + self.pad_x
        out[:, 1] = out[:, 1] * self.scale + self.pad_y
        out[:, 2:4] *= self.scale
        return out

    def crop_content(self, image: torch.Tensor) -> torch.Tensor:
        """The letterbox content region of a network-sized map ``[..., H_in, W_in]``."""
        new_w, new_h = self.content_size
        return image[..., self.pad_y : self.pad_y + new_h, self.pad_x : self.pad_x + new_w]

    def crop_to_original(self, image: np.ndarray) -> np.ndarray:
        """Undo padding and scaling of a network-sized image."""
        new_w, new_h = self.content_size
        content = image[self.pad_y : self.pad_y + new_h, self.pad_x : self.pad_x + new_w]
        if (new_w, new_h) == (self.width, self.height):
            return np.ascontiguousarray(content)
        return cv2.resize(content, (self.width, self.height), interpolation=cv2.INTER_LINEAR)


def clip_to_image(boxes: np.ndarray, width: int, height: int, rotated: bool) -> np.ndarray:
    """Keep boxes inside the image: horizontal boxes are clipped; rotated ones keep their shape
    and only their centre is clamped (clipping would change the oriented rectangle)."""
    out = boxes.copy()
    if rotated:
        out[:, 0] = out[:, 0].clip(0, width)
        out[:, 1] = out[:, 1].clip(0, height)
        return out
    x1 = (out[:, 0] - out[:, 2] / 2).clip(0, width)
    y1 = (out[:, 1] - out[:, 3] / 2).clip(0, height)
    x2 = (out[:, 0] + out[:, 2] / 2).clip(0, width)
    y2 = (out[:, 1] + out[:, 3] / 2).clip(0, height)
    out[:, 0], out[:, 1] = (x1 + x2) / 2, (y1 + y2) / 2
    out[:, 2], out[:, 3] = x2 - x1, y2 - y1
    return out


@dataclass
class Detections:
    """Boxes [N,5] (cx, cy, w, h, angle) in original RGB pixels, scores [N], class indices [N];
    ids [N]: persistent object ids from a tracker (-1: none yet), None when nothing tracks."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class EngineResult:
    """Detections at once; the fused image is made when first asked for (`fused_luma`), so
    a consumer that only wants boxes never pays for it and the node builds it on its image
    thread, off the detections' path. It is made from the arrays given to `infer`, not from
    copies: leave them unchanged until then."""

    detections: Detections
    make_fused: Callable[[], np.ndarray] = field(repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)
    _fused_luma: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def fused_luma(self) -> np.ndarray:
        """uint8 HxW at the RGB image's size; making it adds ``timings_ms["fused"]``. An
        error in making it (the compensation, say) is raised here, not by `infer`."""
        if self._fused_luma is None:
            t0 = time.perf_counter()
            self._fused_luma = self.make_fused()
            self.timings_ms["fused"] = (time.perf_counter() - t0) * 1e3
        return self._fused_luma

    def fused_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Colour output: fused luminance with the visible image's chroma (uint8 HxWx3, RGB)."""
        return merge_fused_luma(self.fused_luma, rgb)

    def fused_bgr(self, rgb: np.ndarray) -> np.ndarray:
        """``fused_rgb`` in BGR channel order, ready for a bgr8 message."""
        return merge_fused_luma(self.fused_luma, rgb, order="bgr")


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[1, 1, H, W]`` in [0, 1] -> uint8 HxW on the CPU, rounded half to even like
    ``torch.round`` (OpenCV's one pass: 0.14 vs 0.50 ms at 640x512)."""
    plane = np.ascontiguousarray(image[0, 0].float().clamp(0, 1).cpu().numpy())
    return cv2.convertScaleAbs(plane, alpha=255.0)


class FusionEngine:
    """Runs one checkpoint: `infer(rgb, thermal)` -> fused image + detections in RGB pixels.

    device: 'auto' (CUDA if present), 'cpu' or 'cuda[:N]'. fp16: half precision, default on for
    CUDA. backend: who runs the forward pass (`fusion_perception.backends.BACKEND_CHOICES`;
    'auto' = the fastest installed for the device). The default stays eager 'torch' so library
    users (evaluation, tests) get the checkpoint's own numbers and never an export; the node
    and fusion-infer default to 'auto'. artifact: an exported file for that backend; None
    exports the checkpoint into the cache on first use. Either way the artifact is checked
    against the checkpoint before use. warmup: forward passes at construction so the first
    real frame is not slow. tune_allocator: on CPU, see `tune_cpu_allocator`. classes: names
    of the classes to report (None: all); the others are dropped before NMS. agnostic_nms: one
    box per object whatever its class (NMS across classes). compensation: a trained task
    compensation (`fusion_perception.compensation`, a file or the loaded object) for the
    fusion network's image, applied after the forward pass so the image suits its downstream
    consumer; None: the fusion network's own image (the viewer's). calibrated_scores: report
    (and threshold) scores through the checkpoint's score calibration when it has one
    (`fusion_perception.score_calibration`); False: the head's raw scores (what a fit needs).
    """

    def __init__(
        self,
        checkpoint: Checkpoint | str | os.PathLike,
        device: str = "auto",
        fp16: bool | None = None,
        score_threshold: float = 0.25,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        warmup: int = 1,
        tune_allocator: bool = True,
        backend: str = "torch",
        artifact: str | os.PathLike | None = None,
        classes: Sequence[str] | None = None,
        agnostic_nms: bool = False,
        compensation: Compensation | str | os.PathLike | None = None,
        calibrated_scores: bool = True,
    ) -> None:
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint)
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold: {score_threshold} is outside [0, 1]")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold: {nms_threshold} is outside (0, 1]")
        if max_detections < 1:
            raise ValueError(f"max_detections: {max_detections} must be >= 1")
        self.checkpoint = checkpoint
        self.device = select_device(device)
        if tune_allocator and self.device.type == "cpu":
            tune_cpu_allocator()
        self.fp16 = self.device.type == "cuda" if fp16 is None else fp16
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections
        self.model = checkpoint.build_model(self.device)  # postprocess, and the torch backend
        self.backend = load_backend(
            checkpoint, self.model, backend, self.device, self.fp16, artifact
        )
        self.input_size = checkpoint.input_size
        self.class_names = checkpoint.class_names
        self.class_filter = self._class_indices(classes)
        self.agnostic_nms = agnostic_nms
        self.score_calibration = checkpoint.score_calibration if calibrated_scores else None
        self.rotated = checkpoint.model_config.detection_head.rotated
        self.pyramid_levels = checkpoint.model_config.fusion_head.pyramid_levels
        if compensation is not None and not isinstance(compensation, Compensation):
            compensation = load_compensation(compensation, self.device)
        if compensation is not None:
            compensation.check_fusion(checkpoint)
            compensation.to(self.device)
        self.compensation = compensation
        for _ in range(warmup):  # the fused image too (and the compensation's first pass)
            width, height = self.input_size
            blank = np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.float32)
            _ = self.infer(*blank).fused_luma

    def _class_indices(self, classes: Sequence[str] | None) -> list[int] | None:
        if classes is None:
            return None
        unknown = [name for name in classes if name not in self.class_names]
        if unknown or not classes:
            raise ValueError(
                f"classes: {unknown or 'an empty list'} is not a subset of the checkpoint's "
                f"classes {list(self.class_names)}"
            )
        return [self.class_names.index(name) for name in classes]

    def _fuse_native(
        self, weight: torch.Tensor, box: Letterbox, rgb: np.ndarray, thermal: np.ndarray
    ) -> torch.Tensor:
        """The network's weight map applied to the full-resolution sources: ``[1, 1, H, W]``
        float32 in [0, 1], on the device."""
        luma = torch.as_tensor(LUMA, device=self.device)
        visible = (torch.from_numpy(rgb).to(self.device).float() @ luma)[None, None] / 255.0
        warm = torch.from_numpy(np.ascontiguousarray(thermal, np.float32)).to(self.device)
        size = (rgb.shape[0], rgb.shape[1])
        content = box.content_size[::-1]
        levels = levels_for_size(self.pyramid_levels, size, content)
        return fuse_pyramid(box.crop_content(weight.float()), visible, warm[None, None], levels)

    @torch.inference_mode()
    def _fused_luma(
        self,
        outputs: dict[str, torch.Tensor],
        box: Letterbox,
        rgb: np.ndarray,
        thermal: np.ndarray,
        rgb_in: np.ndarray,
        thermal_in: np.ndarray,
    ) -> np.ndarray:
        """The fused image of one forward pass, uint8 at the RGB size (compensated if set).
        rgb_in, thermal_in: the network-size frames the forward pass ran on."""
        fused = outputs["fused"].float().clamp(0, 1)  # [1, 1, h, w], the input size
        correction = None
        if self.compensation is not None:
            inputs = frame_tensors(rgb_in, thermal_in, self.device)
            correction = self.compensation.correction(fused, *inputs)
        if "fusion_weight" in outputs:
            native = self._fuse_native(outputs["fusion_weight"], box, rgb, thermal)
            if correction is not None:
                native = CompensationNet.apply(native, box.crop_content(correction))
            return _to_uint8(native)
        # the network's own image: the input size, scaled back to the RGB size
        if correction is not None:
            fused = CompensationNet.apply(fused, correction)
        return box.crop_to_original(_to_uint8(fused))

    def infer(self, rgb: np.ndarray, thermal: np.ndarray) -> EngineResult:
        """rgb: uint8 HxWx3 (RGB order); thermal: float32 HxW in [0, 1], registered to rgb."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb: expected uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ValueError(f"rgb: empty image {rgb.shape}")
        if thermal.shape != rgb.shape[:2]:
            raise ValueError(
                f"thermal: size {thermal.shape[1]}x{thermal.shape[0]} differs from rgb "
                f"{rgb.shape[1]}x{rgb.shape[0]}; register it first (calibration)"
            )
        t0 = time.perf_counter()
        box = Letterbox.fit(rgb.shape[1], rgb.shape[0], *self.input_size)
        thermal = np.asarray(thermal, np.float32)
        rgb_in = box.apply(rgb, self.input_size, fill=0)
        thermal_in = box.apply(thermal, self.input_size, 0.0)
        with torch.inference_mode():
            prepared = self.backend.prepare(rgb_in, thermal_in)
            t1 = time.perf_counter()
            outputs = self.backend.forward(*prepared)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t2 = time.perf_counter()
            (result,) = self.model.postprocess(
                outputs,
                score_threshold=self.score_threshold,
                nms_threshold=self.nms_threshold,
                max_detections=self.max_detections,
                classes=self.class_filter,
                agnostic=self.agnostic_nms,
                calibration=self.score_calibration,
            )
            boxes = result["boxes"].float().cpu().numpy()
            scores = result["scores"].float().cpu().numpy()
            labels = result["labels"].cpu().numpy().astype(np.int64)
        original = clip_to_image(
            box.boxes_to_original(boxes), rgb.shape[1], rgb.shape[0], self.rotated
        )
        visible = (original[:, 2] >= 1.0) & (original[:, 3] >= 1.0)
        detections = Detections(original[visible], scores[visible], labels[visible])
        t3 = time.perf_counter()
        return EngineResult(
            detections=detections,
            make_fused=lambda: self._fused_luma(outputs, box, rgb, thermal, rgb_in, thermal_in),
            timings_ms={
                "preprocess": (t1 - t0) * 1e3,
                "forward": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
        )
