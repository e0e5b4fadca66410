"""fusion-export: export a checkpoint's tensor forward pass to TorchScript or ONNX, and check it.

The exported graph is the model's ``forward(rgb [1,3,H,W], thermal [1,1,H,W])`` (both float32 in
[0, 1], H x W = the checkpoint's input size) returning the dense outputs ``fused``,
(``fusion_weight``,) ``cls_logits``, ``bbox_reg``, ``ctrness``, (``angle``,) ``boxes``;
letterboxing, score threshold and NMS stay outside (fusion_perception.engine). Shapes are static.
With ``fusion_head.output: weights`` a runtime gets native-resolution fusion by applying
``fusion_weight`` to the full-size sources with `fusion_perception.model.pyramid_fusion`, as
FusionEngine does; ``fused`` is the same blend at the input size.

After writing, the export is run on a real input (a synthetic scene, or --rgb/--thermal files)
and every output is compared with eager PyTorch: TorchScript is loaded back and run; ONNX is
checked with onnx.checker and run with onnxruntime when it is installed, else with ONNX's
reference evaluator. A mismatch names the output and its largest error, exits non-zero and
leaves no file behind. Class names, input size and the thermal normalization are embedded as
metadata (TorchScript extra file ``fusion_perception.json``; ONNX ``metadata_props``).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_perception.checkpoint import Checkpoint, load_checkpoint
from fusion_perception.cli.common import run_cli
from fusion_perception.engine import Letterbox, select_device
from fusion_perception.imaging import ThermalNormalizer
from fusion_perception.synthetic import SceneGenerator

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
METADATA_FILE = "fusion_perception.json"


class ExportMismatchError(ValueError):
    """An exported model whose outputs differ from eager PyTorch beyond the tolerance."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-export",
        description="Export a checkpoint's forward pass to TorchScript or ONNX and verify it.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file (.pt)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="export format")
    parser.add_argument("--out", required=True, type=Path, help="file to write (.pt / .onnx)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="device to trace TorchScript on (it keeps that device type); ONNX uses the CPU",
    )
    parser.add_argument("--rgb", type=Path, help="RGB image to verify with (default: synthetic)")
    parser.add_argument("--thermal", type=Path, help="thermal image to verify with")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance")
    return parser


def example_inputs(
    checkpoint: Checkpoint, rgb_path: Path | None = None, thermal_path: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A real input pair at the network size: rgb [1,3,H,W] and thermal [1,1,H,W] in [0, 1].

    From files (letterboxed like the engine does, thermal normalized with the checkpoint's
    scheme) or, without files, a synthetic scene.
    """
    width, height = checkpoint.input_size
    normalizer = ThermalNormalizer.from_dict(checkpoint.thermal_normalization)
    if (rgb_path is None) != (thermal_path is None):
        raise ValueError("--rgb/--thermal: give both files or neither")
    if rgb_path is None:
        scene = SceneGenerator(width, height, seed=0).sample(0)
        rgb, raw = scene.rgb, scene.thermal_raw
    else:
        from fusion_perception.cli.infer import read_rgb, read_thermal

        rgb, raw = read_rgb(rgb_path), read_thermal(thermal_path)
        if raw.shape != rgb.shape[:2]:
            raise ValueError(
                f"--thermal: {thermal_path} is {raw.shape[1]}x{raw.shape[0]}, the RGB image "
                f"{rgb.shape[1]}x{rgb.shape[0]}; give a registered pair"
            )
    thermal = normalizer(raw)
    box = Letterbox.fit(rgb.shape[1], rgb.shape[0], width, height)
    rgb_in = torch.from_numpy(box.apply(rgb, (width, height), fill=0)).permute(2, 0, 1)
    thermal_in = torch.from_numpy(box.apply(thermal, (width, height), fill=0.0))
    return rgb_in[None].float().div(255.0).contiguous(), thermal_in[None, None].contiguous()


def metadata(checkpoint: Checkpoint, output_names: Sequence[str]) -> dict[str, Any]:
    """What a deployment needs besides the graph."""
    width, height = checkpoint.input_size
    return {
        "class_names": list(checkpoint.class_names),
        "input_size": [width, height],
        "inputs": {"rgb": [1, 3, height, width], "thermal": [1, 1, height, width]},
        "outputs": list(output_names),
        "rotated": checkpoint.model_config.detection_head.rotated,
        "thermal_normalization": checkpoint.thermal_normalization,
        "model": checkpoint.model_config.to_dict(),
    }


def _run_eager(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model(*(x.clone() for x in inputs))
    return {name: value.float().cpu().numpy() for name, value in out.items()}


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the notices tracing is known to print for this model: the deprecation of
    TorchScript and its ONNX exporter (both requested on purpose) and shape-check booleans in
    group_norm."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based")
        warnings.filterwarnings(
            "ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.functional"
        )
        yield


def export_torchscript(
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    meta: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Trace and save; returns the outputs of the module loaded back from `path`."""
    with _quiet_tracing():
        with torch.no_grad():
            traced = torch.jit.trace(
                model, tuple(x.clone() for x in inputs), strict=False, check_trace=False
            )
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
        loaded = torch.jit.load(str(path), map_location=inputs[0].device)
    with torch.inference_mode():
        out = loaded(*(x.clone() for x in inputs))
    return {name: value.float().cpu().numpy() for name, value in out.items()}


def export_onnx(
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    output_names: Sequence[str],
    meta: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], str]:
    """Export with the TorchScript-based exporter (opset 17), check the graph, add metadata;
    returns the ONNX outputs and the runtime that produced them."""
    try:
        import onnx
    except ImportError:
        raise ValueError("--format onnx: needs the 'onnx' package (pip install onnx)") from None

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
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_FILE, json.dumps(meta)
    onnx.save(graph, str(path))
    feeds = {"rgb": inputs[0].cpu().numpy(), "thermal": inputs[1].cpu().numpy()}
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        values = ReferenceEvaluator(graph).run(None, feeds)
        runtime = "onnx.reference"
    else:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        values = session.run(None, feeds)
        runtime = "onnxruntime"
    names = [output.name for output in graph.graph.output]
    return {n: np.asarray(v, np.float32) for n, v in zip(names, values, strict=True)}, runtime


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    exported: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
) -> dict[str, float]:
    """Max |exported - eager| per output; raises ExportMismatchError naming the first output
    that is missing, has another shape, or differs by more than atol + rtol * |eager|."""
    errors = {}
    for name, expected in reference.items():
        if name not in exported:
            raise ExportMismatchError(f"output {name!r}: missing from the export")
        actual = exported[name]
        if actual.shape != expected.shape:
            raise ExportMismatchError(
                f"output {name!r}: shape {actual.shape} differs from eager {expected.shape}"
            )
        difference = np.abs(actual.astype(np.float64) - expected)
        errors[name] = float(difference.max()) if difference.size else 0.0
        if not np.all(difference <= atol + rtol * np.abs(expected)):
            raise ExportMismatchError(
                f"output {name!r}: max abs error {errors[name]:.3g} exceeds "
                f"atol={atol} + rtol={rtol} * |eager|"
            )
    return errors


def export_checkpoint(
    checkpoint: Checkpoint | str | Path,
    fmt: str,
    out: str | Path,
    *,
    device: str = "cpu",
    rgb_path: Path | None = None,
    thermal_path: Path | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, float]:
    """Export, verify against eager on a real input, then move into place at `out`.

    Returns the max abs error per output. ONNX is compared with an eager run on the CPU
    (the ONNX runtimes used here run on the CPU).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {FORMATS}")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    out = Path(out)
    target = select_device("cpu" if fmt == "onnx" else device)
    model = checkpoint.build_model(target)
    inputs = tuple(x.to(target) for x in example_inputs(checkpoint, rgb_path, thermal_path))
    reference = _run_eager(model, inputs)
    meta = metadata(checkpoint, list(reference))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        if fmt == "torchscript":
            exported = export_torchscript(model, inputs, partial, meta)
            runtime = "torch.jit.load"
        else:
            exported, runtime = export_onnx(model, inputs, partial, list(reference), meta)
        errors = compare_outputs(reference, exported, atol, rtol)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    log.info("%s checked with %s against eager: max abs error %s", out, runtime, errors)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    errors = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        device=args.device,
        rgb_path=args.rgb,
        thermal_path=args.thermal,
        atol=args.atol,
        rtol=args.rtol,
    )
    worst = max(errors, key=errors.get)
    print(
        f"{args.out}: {args.format} export matches eager (largest error {errors[worst]:.3g} in {worst!r})"
    )
    return 0


def entry_point() -> int:
    return run_cli("fusion-export", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
