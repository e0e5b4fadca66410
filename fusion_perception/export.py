"""Checkpoint -> deployable artifact (TorchScript, ONNX, OpenVINO IR, TensorRT engine), checked.

ROS-free, and free of `fusion_training`, so the node can export on the fly (`cached_artifact`)
and `fusion-export` stays a thin CLI over `export_checkpoint`.

Every artifact holds the model's ``forward(rgb [1,3,H,W], thermal [1,1,H,W])`` (float32 in
[0, 1], H x W = the checkpoint's input size, static shapes) and returns its dense outputs
``fused``, (``fusion_weight``,) ``cls_logits``, ``bbox_reg``, ``ctrness``, (``angle``,)
``boxes`` as float32; letterboxing, score threshold, NMS and native-resolution fusion stay
in `fusion_perception.engine`. Metadata (class names, input size, thermal normalization,
the checkpoint's fingerprint, precision) travels with it: a TorchScript extra file, ONNX
``metadata_props``, and a ``<artifact>.json`` sidecar for OpenVINO and TensorRT, whose files
have no field for it. OpenVINO and TensorRT are built from an intermediate ONNX graph.

After writing, the artifact is loaded with its runtime and compared output by output with
eager PyTorch on a real input; a mismatch names the output and its largest error, and leaves
no file behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_perception.backends import (
    BACKEND_OF,
    METADATA_FILE,
    check_inputs,
    compare_outputs,
    eager_outputs,
    frame_tensors,
    open_artifact,
    require_runtime,
    sidecar_path,
    to_numpy,
    tolerance,
)
from fusion_perception.checkpoint import Checkpoint, load_checkpoint
from fusion_perception.engine import Letterbox, select_device
from fusion_perception.thermal import ThermalNormalizer

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "openvino", "tensorrt")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}
ONNX_OPSET = 17
CACHE_ENV = "FUSION_PERCEPTION_CACHE"


def example_inputs(
    checkpoint: Checkpoint, rgb_path: Path | None = None, thermal_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A real input pair at the network size, as the engine hands it to a backend: rgb uint8
    HxWx3 and thermal float32 HxW in [0, 1] (`frame_tensors` makes the network's tensors).

    From files (letterboxed like the engine does, thermal normalized with the checkpoint's
    scheme) or, without files, `fusion_perception.backends.check_inputs`: the fixed input every
    load of an artifact is checked on.
    """
    if (rgb_path is None) != (thermal_path is None):
        raise ValueError("--rgb/--thermal: give both files or neither")
    if rgb_path is None:
        return check_inputs(checkpoint)
    from fusion_perception.cli.infer import read_rgb, read_thermal

    rgb, raw = read_rgb(rgb_path), read_thermal(thermal_path)
    if raw.shape != rgb.shape[:2]:
        raise ValueError(
            f"--thermal: {thermal_path} is {raw.shape[1]}x{raw.shape[0]}, the RGB image "
            f"{rgb.shape[1]}x{rgb.shape[0]}; give a registered pair"
        )
    width, height = checkpoint.input_size
    thermal = ThermalNormalizer.recorded(checkpoint.thermal_normalization)(raw)
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], width, height)
    return box.apply(rgb, (width, height), fill=0), box.apply(thermal, (width, height), fill=0.0)


def metadata(
    checkpoint: Checkpoint, output_names: Sequence[str], fmt: str, fp16: bool
) -> dict[str, Any]:
    """What a deployment needs besides the graph, and what ties the graph to its checkpoint."""
    width, height = checkpoint.input_size
    return {
        "format": fmt,
        "fp16": fp16,
        "fingerprint": checkpoint.fingerprint(),
        "class_names": list(checkpoint.class_names),
        "input_size": [width, height],
        "inputs": {"rgb": [1, 3, height, width], "thermal": [1, 1, height, width]},
        "outputs": list(output_names),
        "rotated": checkpoint.model_config.detection_head.rotated,
        "thermal_normalization": checkpoint.thermal_normalization,
        "model": checkpoint.model_config.to_dict(),
    }


def companion_files(artifact: Path, fmt: str) -> list[Path]:
    """Every file that makes up an artifact, the artifact first."""
    files = [artifact]
    if fmt == "openvino":
        files.append(artifact.with_suffix(".bin"))
    if fmt in ("openvino", "tensorrt"):
        files.append(sidecar_path(artifact))
    return files


class _HalfPrecision(torch.nn.Module):
    """float32 in and out, half precision inside, so the graph itself carries the precision
    (TensorRT 11 builds strongly typed networks only and has no fp16 builder flag)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(rgb.half(), thermal.half())
        return {name: value.float() for name, value in out.items()}


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the notices tracing is known to print for this model: the deprecation of
    TorchScript and its ONNX exporter (both requested on purpose), shape-check booleans in
    group_norm, the pyramid's sizes taken as constants (shapes are static by design) and the
    exporter's note on strided slices it does not constant-fold."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based")
        warnings.filterwarnings(
            "ignore",
            category=torch.jit.TracerWarning,
            module=r"torch\.nn\.functional|fusion_perception\.model\.pyramid_fusion",
        )
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        yield


def export_torchscript(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, meta: Mapping[str, Any]
) -> None:
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(
            model, tuple(x.clone() for x in inputs), strict=False, check_trace=False
        )
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})


def export_onnx(
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    output_names: Sequence[str],
    meta: Mapping[str, Any] | None,
) -> None:
    """Export with the TorchScript-based exporter (opset 17), check the graph, add metadata."""
    onnx = require_runtime("onnx")
    with _quiet_tracing():
        torch.onnx.export(
            model,
            tuple(x.clone() for x in inputs),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["rgb", "thermal"],
            output_names=list(output_names),
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    if meta is not None:
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_FILE, json.dumps(meta)
    onnx.save(graph, str(path))


def export_openvino(onnx_path: Path, path: Path, compress_to_fp16: bool) -> None:
    """ONNX -> OpenVINO IR (``.xml`` + ``.bin``); fp16 stores the weights in half precision."""
    ov = require_runtime("openvino")
    model = ov.Core().read_model(str(onnx_path))
    ov.save_model(model, str(path), compress_to_fp16=compress_to_fp16)


def export_tensorrt(onnx_path: Path, path: Path) -> None:
    """ONNX -> serialized TensorRT engine for this GPU and TensorRT version.

    The network is strongly typed: its precision is the ONNX graph's (fp16 comes from an
    ONNX traced in half precision), which TensorRT 10 honours with the STRONGLY_TYPED flag and
    TensorRT 11 always does.
    """
    trt = require_runtime("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"--format tensorrt: TensorRT's ONNX parser rejected the graph: {errors}")
    serialized = builder.build_serialized_network(network, builder.create_builder_config())
    if serialized is None:
        raise ValueError("--format tensorrt: TensorRT could not build an engine (see its log)")
    path.write_bytes(bytes(serialized))


def default_export_device(fmt: str, fp16: bool) -> str:
    """TensorRT and half-precision ONNX are traced on the GPU; everything else on the CPU."""
    return "cuda" if fmt == "tensorrt" or (fmt == "onnx" and fp16) else "cpu"


def _write(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    fmt: str,
    fp16: bool,
    artifact: Path,
    output_names: list[str],
) -> None:
    """Write `artifact` (and its companion files) in the folder it names."""
    meta = metadata(checkpoint, output_names, fmt, fp16)
    if fmt == "torchscript":
        export_torchscript(model, inputs, artifact, meta)
        return
    traced = _HalfPrecision(model) if fp16 and fmt != "openvino" else model
    if fmt == "onnx":
        export_onnx(traced, inputs, artifact, output_names, meta)
        return
    graph = artifact.with_name("intermediate.onnx")
    export_onnx(traced, inputs, graph, output_names, None)
    if fmt == "openvino":
        export_openvino(graph, artifact, compress_to_fp16=fp16)
    else:
        export_tensorrt(graph, artifact)
    graph.unlink()
    sidecar_path(artifact).write_text(json.dumps(meta), encoding="utf-8")


def _check_written(
    fmt: str,
    artifact: Path,
    device: torch.device,
    fp16: bool,
    frames: tuple[np.ndarray, np.ndarray],
    reference: Mapping[str, np.ndarray],
    atol: float | None,
    rtol: float | None,
) -> dict[str, float]:
    """Run the artifact with its runtime on `frames` (`example_inputs`) and compare it with
    eager outputs."""
    if fmt == "torchscript":
        with _quiet_tracing():
            loaded = torch.jit.load(str(artifact), map_location=device)
        with torch.inference_mode():
            out = loaded(*frame_tensors(*frames, device))
        exported = to_numpy(out)
    else:
        # the artifact's own precision is checked; runtime precision hints are the loader's
        backend = open_artifact(BACKEND_OF[fmt], artifact, device, fp16=False)
        exported = to_numpy(backend.run(*frames))
    default = tolerance(fp16, device)
    return compare_outputs(
        reference,
        exported,
        default[0] if atol is None else atol,
        default[1] if rtol is None else rtol,
    )


def export_checkpoint(
    checkpoint: Checkpoint | str | Path,
    fmt: str,
    out: str | Path,
    *,
    device: str | None = None,
    fp16: bool = False,
    rgb_path: Path | None = None,
    thermal_path: Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> dict[str, float]:
    """Export, verify against eager on a real input, then move into place at `out`.

    device: where to trace (default: `default_export_device`). fp16: half precision (ONNX and
    TensorRT: traced in half on CUDA; OpenVINO: weights stored in half). atol/rtol default to
    `fusion_perception.backends.tolerance` for the precision and device. Returns the max abs error per
    output; on a mismatch raises `ExportMismatchError` and leaves no file behind.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {FORMATS}")
    if fp16 and fmt == "torchscript":
        raise ValueError("--fp16: not offered for torchscript (use onnx, openvino or tensorrt)")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    out = Path(out)
    target = select_device(device or default_export_device(fmt, fp16))
    if fp16 and fmt in ("onnx", "tensorrt") and target.type != "cuda":
        raise ValueError(f"--fp16: {fmt} in half precision is traced on CUDA; give --device cuda")
    if fmt == "tensorrt" and target.type != "cuda":
        raise ValueError("--device: TensorRT engines are built on a CUDA device")
    model = checkpoint.build_model(target)
    frames = example_inputs(checkpoint, rgb_path, thermal_path)
    inputs = frame_tensors(*frames, target)
    reference = eager_outputs(model, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as staging:
        written = Path(staging) / out.name
        _write(checkpoint, model, inputs, fmt, fp16, written, list(reference))
        errors = _check_written(fmt, written, target, fp16, frames, reference, atol, rtol)
        for source, final in zip(
            companion_files(written, fmt), companion_files(out, fmt), strict=True
        ):
            source.replace(final)
    log.info("%s checked against eager: max abs error %s", out, errors)
    return errors


def cache_root() -> Path:
    """$FUSION_PERCEPTION_CACHE, else $XDG_CACHE_HOME/fusion_perception (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fusion_perception"


def _runtime_tag(fmt: str, device: torch.device) -> str:
    """TensorRT engines only run on the GPU model and TensorRT version that built them."""
    if fmt != "tensorrt":
        return ""
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name(device)).strip("_")
    return f"-trt{require_runtime('tensorrt').__version__}-{gpu}"


def cached_artifact(checkpoint: Checkpoint, fmt: str, fp16: bool, device: torch.device) -> Path:
    """The artifact of `checkpoint` in the cache, exported on first use.

    Keyed by the checkpoint's fingerprint, the format and the precision, so a retrained
    checkpoint never meets a stale artifact. The export is staged in a temporary folder and
    renamed into place, so concurrent processes never see half an artifact.
    """
    key = f"{fmt}{'-fp16' if fp16 else ''}{_runtime_tag(fmt, device)}"
    folder = cache_root() / checkpoint.fingerprint()[:24] / key
    artifact = folder / f"model{SUFFIXES[fmt]}"
    if all(path.is_file() for path in companion_files(artifact, fmt)):
        return artifact
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete entry (files deleted by hand)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        export_checkpoint(checkpoint, fmt, staging / artifact.name, device=str(device), fp16=fp16)
        log.info("exported %s (%s) into the cache: %s", fmt, "fp16" if fp16 else "fp32", folder)
        try:
            staging.rename(folder)
        except OSError:  # another process got there first; its artifact is the same
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return artifact
