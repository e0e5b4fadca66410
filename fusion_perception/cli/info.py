"""fusion-info: parameters, FLOPs and measured forward time of a checkpoint or model config.

``--backend`` times that backend's forward pass (e.g. OpenVINO) at the checkpoint's input size;
FLOPs and parameters are always counted on the PyTorch network.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusion_perception.backends import TorchBackend, frame_tensors, load_backend
from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli.common import add_backend_args, parse_size, run_cli
from fusion_perception.engine import select_device
from fusion_perception.model import build_model, load_model_config


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-info",
        description="Print parameters, FLOPs and the measured forward time on this machine.",
    )
    parser.add_argument("source", type=Path, help="checkpoint (.pt) or model config (.yaml)")
    parser.add_argument("--size", help="input WIDTHxHEIGHT (default: checkpoint's, else 640x512)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--runs", type=int, default=10, help="timed forward passes")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="half precision (torch, onnxruntime, tensorrt: CUDA; openvino: CPUs with fp16)",
    )
    add_backend_args(parser, default="torch")
    return parser


def count_flops(model: torch.nn.Module, rgb: torch.Tensor, thermal: torch.Tensor) -> int:
    """FLOPs of one forward pass, counted by torch's dispatcher (multiply-add = 2 FLOPs)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(rgb, thermal)
    return counter.get_total_flops()


def time_forward(
    forward: Callable[[Any, Any], object], rgb: Any, thermal: Any, device: torch.device, runs: int
) -> list[float]:
    """Milliseconds per `Backend.forward` on its prepared inputs, after two warm-up passes."""
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            start = time.perf_counter()
            forward(rgb, thermal)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    return times


def describe(
    source: Path,
    size: tuple[int, int] | None,
    device: str,
    runs: int,
    backend: str = "torch",
    artifact: Path | None = None,
    fp16: bool = False,
) -> dict:
    """Measure a model; returns the figures `main` prints (also used by the benchmarks).

    A backend other than torch runs the checkpoint's exported graph, whose shapes are fixed at
    the checkpoint's input size, so it needs a checkpoint and no other --size.
    """
    checkpoint = None
    if source.suffix in (".yaml", ".yml"):
        config = load_model_config(source)
        model = build_model(config)
        size = size or (640, 512)
    else:
        checkpoint = load_checkpoint(source)
        config = checkpoint.model_config
        model = checkpoint.build_model()
        size = size or checkpoint.input_size
    if backend != "torch" or artifact is not None:
        if checkpoint is None:
            raise ValueError(f"--backend {backend}: needs a checkpoint, not a model config")
        if tuple(size) != checkpoint.input_size:
            width, height = checkpoint.input_size
            raise ValueError(
                f"--size: --backend {backend} runs the exported graph at the checkpoint's "
                f"input size {width}x{height} only"
            )
    if size[0] % model.max_stride or size[1] % model.max_stride:
        raise ValueError(f"--size: {size[0]}x{size[1]} is not a multiple of {model.max_stride}")
    dev = select_device(device)
    model = model.to(dev).eval()
    generator = np.random.default_rng(0)
    rgb = generator.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    thermal = generator.random((size[1], size[0]), dtype=np.float32)
    parts = {
        name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()
    }
    gflops = count_flops(model, *frame_tensors(rgb, thermal, dev)) / 1e9
    if checkpoint is None:
        runner = TorchBackend(model, dev, fp16)
    else:
        runner = load_backend(checkpoint, model, backend, dev, fp16, artifact)
    times = time_forward(runner.forward, *runner.prepare(rgb, thermal), dev, runs)
    return {
        "source": str(source),
        "size": size,
        "device": str(dev),
        "backend": runner.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_by_part": parts,
        "gflops": gflops,
        "forward_ms_median": statistics.median(times),
        "forward_ms_min": min(times),
        "rotated": config.detection_head.rotated,
        "num_classes": config.detection_head.num_classes,
        "score_calibration": None if checkpoint is None else checkpoint.score_calibration,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.runs < 1:
        raise ValueError(f"--runs: {args.runs} must be >= 1")
    size = parse_size(args.size) if args.size else None
    info = describe(
        args.source, size, args.device, args.runs, args.backend, args.artifact, args.fp16
    )
    width, height = info["size"]
    print(f"model       {info['source']}")
    print(
        f"boxes       {'rotated' if info['rotated'] else 'horizontal'}, {info['num_classes']} classes"
    )
    calibration = info["score_calibration"]
    if calibration is not None:
        fit = calibration.fitted_on
        print(
            f"scores      calibrated: sigmoid({calibration.slope:.3f} * logit(raw) "
            f"{calibration.offset:+.3f}), fitted on {fit.get('data')} {fit.get('split')} "
            f"({fit.get('boxes')} boxes); 0.3 = raw {calibration.raw_threshold(0.3):.3f}"
        )
    print(f"parameters  {info['parameters']:,}")
    for name, count in info["parameters_by_part"].items():
        print(f"  {name:<18}{count:,}")
    print(f"GFLOPs      {info['gflops']:.2f} at {width}x{height}")
    print(
        f"forward     {info['forward_ms_median']:.1f} ms median, {info['forward_ms_min']:.1f} ms min "
        f"({args.runs} runs, backend {info['backend']} on {info['device']}; torch "
        f"{torch.get_num_threads()} threads)"
    )
    return 0


def entry_point() -> int:
    return run_cli("fusion-info", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
