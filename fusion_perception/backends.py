"""Inference backends behind one interface: the network's forward pass in eager PyTorch, ONNX
Runtime, OpenVINO or TensorRT.

A `Backend` takes the camera's pixels at the network input size (rgb uint8 HxWx3, thermal
float32 HxW in [0, 1]): `prepare` turns them into what its runtime takes and `forward` returns
the model's dense outputs as torch tensors on ``backend.device``. Most backends prepare float32
``[1,C,H,W]`` tensors; OpenVINO takes the uint8 pixels as they are and converts them inside its
graph, which costs its forward pass nothing measurable and saves the node's worker a Python pass
over the frame. Letterboxing, NMS and native-resolution fusion stay in `fusion_perception.engine`,
identical for every backend. On this 2-core CPU OpenVINO runs the forward pass fastest, then ONNX
Runtime, then eager PyTorch (README, "Inference backends"), which is the order ``auto`` tries them
in.

`load_backend` is the one way in: it picks the backend (``auto``: the fastest installed for
the device), exports the checkpoint on the fly into the cache when no artifact is given, and
refuses an artifact made from another checkpoint (fingerprint) or whose outputs differ from
eager PyTorch on a fixed input by more than `tolerance`.
"""

from __future__ import annotations

import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from fusion_perception.checkpoint import Checkpoint
from fusion_perception.synthetic import SceneGenerator
from fusion_perception.thermal import ThermalNormalizer

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto", *BACKENDS)
# The export format each artifact backend runs, and back.
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}
BACKEND_OF = {fmt: name for name, fmt in FORMAT_OF.items()}
# `auto` tries these in order (measured here, nano 640x512 on the CPU: OpenVINO < ONNX Runtime
# < torch; on a GPU TensorRT beats eager fp16).
AUTO_ORDER = {"cpu": ("openvino", "onnxruntime", "torch"), "cuda": ("tensorrt", "torch")}
ARTIFACT_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt"}
DEVICES = {
    "torch": ("cpu", "cuda"),
    "onnxruntime": ("cpu", "cuda"),
    "openvino": ("cpu",),
    "tensorrt": ("cuda",),
}
METADATA_FILE = "fusion_perception.json"

_NO_ROSDEP = (
    "it has no rosdep key: apt/rosdep users pip-install it into the Python environment ROS uses "
    "(on Ubuntu 24.04 a venv with --system-site-packages)"
)
INSTALL_HINTS = {
    "onnx": f"pip install onnx; {_NO_ROSDEP}",
    "onnxruntime": f"pip install onnxruntime (onnxruntime-gpu for CUDA); {_NO_ROSDEP}",
    "openvino": f"pip install openvino; {_NO_ROSDEP}, or use Intel's apt repository",
    "tensorrt": (
        "TensorRT needs CUDA: pip install tensorrt, or NVIDIA's apt package python3-libnvinfer "
        "from the CUDA repository; rosdep does not install it"
    ),
}

# (atol, rtol): an output passes when max |artifact - eager| <= atol + rtol * max |eager|, i.e.
# relative to the output's own scale (boxes are in pixels, logits in units, images in [0, 1]).
# Measured on the check input (README, "Inference backends"): float32 runtimes stay within
# ~3e-5 of eager on logits and regressions and ~1e-3 px on 640-px boxes (30x+ margin here);
# half precision within ~0.03 on the fused image, 0.12 on box regressions, 0.05 on logits and
# 5.6 px on 640-px boxes (2.5x+ margin). On CUDA float32 convolutions may run in TF32 (10-bit
# mantissa), in eager PyTorch and in the runtimes alike, so CUDA checks use the looser pair.
TOLERANCES = {False: (1e-4, 1e-4), True: (5e-2, 3e-2)}


class BackendError(ValueError):
    """A backend that cannot run here, or an artifact that must not be used."""


class BackendUnavailableError(BackendError):
    """The runtime's Python package is not installed."""


class ArtifactMismatchError(BackendError):
    """An artifact exported from another checkpoint."""


class ExportMismatchError(BackendError):
    """An artifact whose outputs differ from eager PyTorch beyond the tolerance."""


def tolerance(fp16: bool, device: torch.device) -> tuple[float, float]:
    return TOLERANCES[bool(fp16) or device.type == "cuda"]


def require_runtime(package: str) -> Any:
    """Import a runtime package, or raise naming it and how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend: the Python package '{package}' is not installed or does not load "
            f"({exc}); {INSTALL_HINTS[package]}"
        ) from None


def check_device(name: str, device: torch.device) -> None:
    """Before any export: a backend asked for a device it cannot run on."""
    if device.type not in DEVICES[name]:
        others = [n for n in BACKENDS if device.type in DEVICES[n]]
        raise BackendError(
            f"backend {name}: runs on {' or '.join(DEVICES[name])}, not {device}; on "
            f"{device.type} use {', '.join(others)}"
        )


def installed(package: str) -> bool:
    """Importable, not just present: a runtime whose import fails (a missing shared library)
    must not be chosen by ``auto``."""
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def resolve_backend(name: str, device: torch.device, artifact: str | Path | None = None) -> str:
    """``auto`` -> a concrete backend: the artifact's kind when one is given (by suffix), else
    the first of AUTO_ORDER for the device whose runtime is installed (and, to export on the
    fly, the 'onnx' package)."""
    if name not in BACKEND_CHOICES:
        raise BackendError(f"backend: {name!r} is not one of {list(BACKEND_CHOICES)}")
    if name != "auto":
        return name
    if artifact:
        suffix = Path(artifact).suffix
        if suffix not in ARTIFACT_SUFFIXES:
            raise BackendError(
                f"backend auto: cannot tell the runtime of artifact {artifact} from its suffix "
                f"(known: {', '.join(ARTIFACT_SUFFIXES)}); name the backend"
            )
        return ARTIFACT_SUFFIXES[suffix]
    for candidate in AUTO_ORDER[device.type]:
        if candidate == "torch" or (installed(candidate) and installed("onnx")):
            return candidate
    raise AssertionError("unreachable: torch is always available")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _tensor(x: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    return tensor.to(device=device, dtype=dtype).contiguous()


def to_numpy(outputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: value.float().cpu().numpy() for name, value in outputs.items()}


def eager_outputs(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]
) -> dict[str, np.ndarray]:
    """The reference: the checkpoint's own network in float32."""
    with torch.inference_mode():
        return to_numpy(model(*(x.clone() for x in inputs)))


def frame_tensors(
    rgb: np.ndarray, thermal: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera pixels (rgb uint8 HxWx3, thermal float HxW in [0, 1]) -> the network's inputs:
    contiguous float32 ``[1,3,H,W]`` in [0, 1] and ``[1,1,H,W]`` on `device`, each cast and laid
    out in one pass (the uint8 frame travels to a GPU, not four times its size in float)."""
    source = torch.from_numpy(np.ascontiguousarray(rgb)).to(device, non_blocking=True)
    out = torch.empty((3, *rgb.shape[:2]), dtype=torch.float32, device=device)
    torch.div(source.permute(2, 0, 1), 255.0, out=out)
    warm = torch.from_numpy(np.ascontiguousarray(thermal, np.float32)).to(device)
    return out[None], warm[None, None]


def check_inputs(checkpoint: Checkpoint) -> tuple[np.ndarray, np.ndarray]:
    """The fixed input every artifact is checked on: synthetic scene 0 of seed 0 at the
    network size (rgb uint8 HxWx3, thermal float32 HxW normalized with the checkpoint's scheme)."""
    width, height = checkpoint.input_size
    scene = SceneGenerator(width, height, seed=0).sample(0)
    # counts as float: the scheme's arithmetic, without the integer-range checks meant for cameras
    # (a range in degrees would be "unreachable" for the synthetic uint16 counts)
    normalizer = ThermalNormalizer.recorded(checkpoint.thermal_normalization)
    return scene.rgb, normalizer(scene.thermal_raw.astype(np.float32))


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    exported: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    context: str = "",
) -> dict[str, float]:
    """Max |exported - eager| per output; raises ExportMismatchError naming the first output
    that is missing, has another shape, or differs by more than atol + rtol * max |eager|."""
    errors = {}
    for name, expected in reference.items():
        if name not in exported:
            raise ExportMismatchError(f"output {name!r}: missing from the artifact{context}")
        actual = exported[name]
        if actual.shape != expected.shape:
            raise ExportMismatchError(
                f"output {name!r}: shape {actual.shape} differs from eager {expected.shape}{context}"
            )
        if not expected.size:
            errors[name] = 0.0
            continue
        errors[name] = float(np.abs(actual.astype(np.float64) - expected).max())
        allowed = atol + rtol * float(np.abs(expected).max())
        if not errors[name] <= allowed:  # also catches NaN
            raise ExportMismatchError(
                f"output {name!r}: max abs error {errors[name]:.3g} exceeds atol={atol} + "
                f"rtol={rtol} * max|eager| = {allowed:.3g}{context}"
            )
    return errors


def sidecar_path(artifact: Path) -> Path:
    """``model.xml`` -> ``model.xml.json``: metadata of formats that cannot embed it."""
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: Path) -> dict[str, Any]:
    path = sidecar_path(artifact)
    if not path.is_file():
        raise BackendError(
            f"artifact {artifact}: its metadata file {path.name} is missing (fusion-export "
            "writes both)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


class Backend(ABC):
    """One way of running the network's forward pass.

    name: one of BACKENDS. device: where `forward` returns its tensors. metadata: the
    artifact's (class names, input size, fingerprint, ...); empty for eager torch.
    """

    name: ClassVar[str]

    def __init__(self, device: torch.device, metadata: dict[str, Any]) -> None:
        self.device = device
        self.metadata = metadata

    def prepare(self, rgb: np.ndarray, thermal: np.ndarray) -> tuple[Any, Any]:
        """rgb uint8 HxWx3 (RGB order) and thermal float32 HxW in [0, 1], at the network input
        size -> what `forward` takes (here: `frame_tensors` on the device)."""
        return frame_tensors(rgb, thermal, self.device)

    @abstractmethod
    def forward(self, rgb: Any, thermal: Any) -> dict[str, torch.Tensor]:
        """What `prepare` returned -> the model's dense outputs."""

    def run(self, rgb: np.ndarray, thermal: np.ndarray) -> dict[str, torch.Tensor]:
        """`prepare`, then `forward`."""
        return self.forward(*self.prepare(rgb, thermal))


class TorchBackend(Backend):
    """Eager PyTorch: the checkpoint's network itself, half precision on CUDA when asked."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, fp16: bool) -> None:
        if fp16 and device.type != "cuda":
            raise BackendError("fp16: half precision is only supported on CUDA devices")
        super().__init__(device, {})
        self.dtype = torch.float16 if fp16 else torch.float32
        self.model = model.half() if fp16 else model

    def forward(self, rgb, thermal):
        with torch.inference_mode():
            return self.model(
                _tensor(rgb, self.device, self.dtype), _tensor(thermal, self.device, self.dtype)
            )


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPUExecutionProvider, or CUDAExecutionProvider on a CUDA device."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: torch.device, fp16: bool) -> None:
        ort = require_runtime("onnxruntime")
        if fp16 and device.type != "cuda":
            raise BackendError("fp16: onnxruntime runs half precision on CUDA only")
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    f"backend onnxruntime: device {device} needs the CUDAExecutionProvider "
                    f"(pip install onnxruntime-gpu); this one has {ort.get_available_providers()}"
                )
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        # Its idle worker threads would otherwise spin after each run, taking the cores from
        # the node's other threads and from the next forward pass of another runtime (an
        # OpenVINO pass right after an ONNX Runtime one: 70 -> 103 ms on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_FILE)
        super().__init__(device, json.loads(text) if text else {})
        self.output_names = [output.name for output in self.session.get_outputs()]

    def forward(self, rgb, thermal):
        values = self.session.run(None, {"rgb": _numpy(rgb), "thermal": _numpy(thermal)})
        return {
            name: torch.from_numpy(value).to(self.device)
            for name, value in zip(self.output_names, values, strict=True)
        }


class OpenVINOBackend(Backend):
    """OpenVINO on the CPU: latency hint, explicit inference precision (f32 unless fp16, so a
    CPU with bf16 units does not silently run bf16), thread count left to OpenVINO.

    The artifact's graph takes float NCHW like the others; at load a pre-processing step is
    added in front of it (OpenVINO's PrePostProcessor) so the compiled model takes the RGB
    frame as uint8 NHWC and scales it to [0, 1] itself: `prepare` is then only a reshape.
    """

    name = "openvino"

    def __init__(self, path: Path, device: torch.device, fp16: bool) -> None:
        ov = require_runtime("openvino")
        hints = importlib.import_module("openvino.properties.hint")
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if fp16 and "FP16" not in capabilities:
            raise BackendError(
                f"fp16: this CPU has no half-precision inference in OpenVINO (capabilities "
                f"{', '.join(capabilities)}); use fp16 false"
            )
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.f16 if fp16 else ov.Type.f32,
        }
        compiled = core.compile_model(
            _uint8_rgb_input(ov, core.read_model(str(path))), "CPU", config
        )
        super().__init__(device, read_sidecar(path))
        self.request = compiled.create_infer_request()
        # by name: a port can carry several tensor names, and any one of them may be reported
        self.outputs = [(name, compiled.output(name)) for name in self.metadata["outputs"]]

    def prepare(self, rgb, thermal):
        if rgb.dtype != np.uint8:  # the graph's u8 port would cast float [0, 1] to 0s and 1s
            raise ValueError(f"rgb: the openvino backend takes uint8 pixels, got {rgb.dtype}")
        thermal = np.ascontiguousarray(thermal, np.float32)
        return np.ascontiguousarray(rgb)[None], thermal[None, None]

    def forward(self, rgb, thermal):
        results = self.request.infer({"rgb": rgb, "thermal": thermal})
        return {name: torch.from_numpy(results[port]) for name, port in self.outputs}


def _uint8_rgb_input(ov: Any, model: Any) -> Any:
    """The exported graph with its ``rgb`` input taking uint8 ``[1,H,W,3]`` (the camera's
    layout), converted to float, scaled by 1/255 and transposed to NCHW inside the graph."""
    preprocessing = importlib.import_module("openvino.preprocess")
    ppp = preprocessing.PrePostProcessor(model)
    rgb = ppp.input("rgb")
    rgb.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    rgb.preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    rgb.model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


class TensorRTBackend(Backend):
    """A serialized TensorRT engine on a CUDA device; inputs and outputs stay on the GPU in
    static torch buffers bound once (shapes are static)."""

    name = "tensorrt"

    def __init__(self, path: Path, device: torch.device, fp16: bool) -> None:
        trt = require_runtime("tensorrt")
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"artifact {path}: TensorRT {trt.__version__} cannot load this engine (built by "
                "another TensorRT version or for another GPU?); export it again on this machine"
            )
        super().__init__(device, read_sidecar(path))
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        self.output_names: list[str] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name))))
            self.buffers[name] = torch.empty(shape, dtype=dtype.dtype, device=device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                self.output_names.append(name)

    def forward(self, rgb, thermal):
        with torch.cuda.device(self.device):
            for name, value in (("rgb", rgb), ("thermal", thermal)):
                self.buffers[name].copy_(_tensor(value, self.device, self.buffers[name].dtype))
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("backend tensorrt: execute_async_v3 failed (see its log)")
            return {name: self.buffers[name].clone() for name in self.output_names}


_ARTIFACT_BACKENDS: dict[str, type[Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVINOBackend,
    "tensorrt": TensorRTBackend,
}


def open_artifact(name: str, path: str | Path, device: torch.device, fp16: bool) -> Backend:
    """Load an exported artifact with its runtime (no checks against a checkpoint)."""
    path = Path(path)
    if name not in _ARTIFACT_BACKENDS:
        raise BackendError(f"backend {name}: runs no artifact file (one of {list(FORMAT_OF)})")
    if not path.is_file():
        raise BackendError(f"artifact: {path} does not exist")
    check_device(name, device)
    return _ARTIFACT_BACKENDS[name](path, device, fp16)


def check_artifact(
    backend: Backend, checkpoint: Checkpoint, model: torch.nn.Module, path: Path, fp16: bool
) -> dict[str, float]:
    """Refuse an artifact of another checkpoint, or one whose outputs on `check_inputs` differ
    from the float32 eager `model` beyond the tolerance; returns the max error per output."""
    found = backend.metadata.get("fingerprint")
    expected = checkpoint.fingerprint()
    if found is None:
        raise ArtifactMismatchError(
            f"artifact {path}: records no checkpoint fingerprint (exported by an older "
            "fusion-export); export it again"
        )
    if found != expected:
        raise ArtifactMismatchError(
            f"artifact {path}: fingerprint mismatch, it was exported from another checkpoint "
            f"(artifact {found[:12]}, checkpoint {expected[:12]}); export it from this "
            "checkpoint, or leave the artifact empty to export on the fly"
        )
    rgb, thermal = check_inputs(checkpoint)
    atol, rtol = tolerance(fp16 or backend.metadata.get("fp16", False), backend.device)
    return compare_outputs(
        eager_outputs(model, frame_tensors(rgb, thermal, backend.device)),
        to_numpy(backend.run(rgb, thermal)),
        atol,
        rtol,
        context=f" (artifact {path}, {backend.name}, against eager PyTorch on the check input)",
    )


def load_backend(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    name: str,
    device: torch.device,
    fp16: bool,
    artifact: str | Path | None = None,
) -> Backend:
    """A checked backend for `checkpoint`, whose float32 network `model` is on `device`.

    Without `artifact`, a non-torch backend exports the checkpoint into the cache once
    (`fusion_perception.export.cached_artifact`) and reuses it afterwards.
    """
    name = resolve_backend(name, device, artifact)
    if name == "torch":
        if artifact:
            raise BackendError(
                f"artifact: backend torch runs the checkpoint itself; {artifact} is not used, "
                "leave the artifact empty or name its backend"
            )
        return TorchBackend(model, device, fp16)
    check_device(name, device)
    if not artifact:
        from fusion_perception.export import cached_artifact  # export imports this module

        require_runtime(name)  # before spending seconds on an export it could not run
        artifact = cached_artifact(checkpoint, FORMAT_OF[name], fp16, device)
    backend = open_artifact(name, artifact, device, fp16)
    errors = check_artifact(backend, checkpoint, model, Path(artifact), fp16)
    log.info("backend %s on %s: %s checked, max abs error %s", name, device, artifact, errors)
    return backend
