"""fusion-export: export a checkpoint to TorchScript, ONNX, OpenVINO IR or a TensorRT engine,
and check it against eager PyTorch.

    fusion-export --checkpoint best.pt --format openvino --out model.xml   # + model.bin, .json
    fusion-export --checkpoint best.pt --format tensorrt --fp16 --out model.engine  # CUDA

The library is `fusion_perception.export` (see there for what the artifact holds and how it is
checked); the node and fusion-infer load the files with ``--backend`` / ``backend_artifact``,
or export on the fly without them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fusion_perception.cli.common import run_cli
from fusion_perception.export import FORMATS, export_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-export",
        description="Export a checkpoint's forward pass and verify it against eager PyTorch.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint file (.pt)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="export format")
    parser.add_argument(
        "--out", required=True, type=Path, help="file to write (.pt, .onnx, .xml, .engine)"
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="half precision: onnx/tensorrt traced in half on CUDA; openvino stores the "
        "weights in half (compress_to_fp16)",
    )
    parser.add_argument(
        "--device",
        help="device to trace on (default: cuda for tensorrt and --fp16 onnx, else cpu; "
        "TorchScript keeps that device type)",
    )
    parser.add_argument("--rgb", type=Path, help="RGB image to verify with (default: synthetic)")
    parser.add_argument("--thermal", type=Path, help="thermal image to verify with")
    parser.add_argument(
        "--atol", type=float, help="absolute tolerance (default: the precision's, see README)"
    )
    parser.add_argument(
        "--rtol", type=float, help="tolerance relative to each output's largest |value|"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    errors = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        device=args.device,
        fp16=args.fp16,
        rgb_path=args.rgb,
        thermal_path=args.thermal,
        atol=args.atol,
        rtol=args.rtol,
    )
    worst = max(errors, key=errors.get)
    print(
        f"{args.out}: {args.format} export matches eager (largest error {errors[worst]:.3g} in "
        f"{worst!r})"
    )
    return 0


def entry_point() -> int:
    return run_cli("fusion-export", main)


if __name__ == "__main__":
    raise SystemExit(entry_point())
