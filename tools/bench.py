"""`make bench`: model, node and trainer benchmarks -> one markdown report (docs/benchmarks.md).

Benchmarks measure; they never pass or fail. Timings on a shared machine are noisy, so the report
gives ratios measured within one run next to the absolute figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "training")]

from fusion_perception.backends import (  # noqa: E402
    AUTO_ORDER,
    check_inputs,
    installed,
    load_backend,
)
from fusion_perception.checkpoint import load_checkpoint  # noqa: E402
from fusion_perception.cli.info import describe  # noqa: E402
from fusion_perception.cli.init import main as fusion_init  # noqa: E402
from fusion_perception.engine import FusionEngine, tune_cpu_allocator  # noqa: E402
from fusion_perception.export import CACHE_ENV  # noqa: E402
from fusion_perception.synthetic import SceneGenerator  # noqa: E402

SIZE = (640, 512)
SECTIONS = ("model", "backends", "node", "trainer")


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def bench_models(workdir: Path) -> list[str]:
    lines = [
        "## Model (fusion-info and the engine, 640x512, batch 1)",
        "",
        "| config | parameters | GFLOPs | forward ms (median) | forward / nano |",
        "|---|---|---|---|---|",
    ]
    figures = {}
    for name in ("nano", "nano_obb", "small", "small_obb", "base", "base_obb"):
        runs = 3 if name.startswith("base") else 10
        figures[name] = describe(REPO / "config" / "models" / f"{name}.yaml", SIZE, "auto", runs)
    for name, f in figures.items():
        ratio = f["forward_ms_median"] / figures["nano"]["forward_ms_median"]
        lines.append(
            f"| {name} | {f['parameters']:,} | {f['gflops']:.2f} | "
            f"{f['forward_ms_median']:.1f} | {ratio:.2f} |"
        )
    checkpoint = nano_checkpoint(workdir)
    engine = FusionEngine(checkpoint, score_threshold=0.3, warmup=3)
    scene = SceneGenerator(*SIZE, seed=0).sample(0)
    thermal = scene.thermal_raw.astype(np.float32) / 16383.0
    timings = []
    for _ in range(20):
        result = engine.infer(scene.rgb, thermal)
        _ = result.fused_luma  # made on first use, timed as "fused"
        timings.append(result.timings_ms)
    pre, fwd, post, fused = (
        statistics.median(t[stage] for t in timings)
        for stage in ("preprocess", "forward", "postprocess", "fused")
    )
    lines += [
        "",
        f"Engine, nano at 640x512 (letterbox + tensor conversion, forward, decoding + NMS, "
        f"fused image back to RGB size), median of 20: preprocess {pre:.2f} ms, forward {fwd:.1f} ms, "
        f"postprocess {post:.2f} ms, fused image {fused:.2f} ms: **pre + post + fused = "
        f"{100 * (pre + post + fused) / fwd:.1f} % of forward** (goal: at most 10 %).",
    ]
    return lines


def nano_checkpoint(workdir: Path) -> Path:
    """An untrained nano checkpoint at 640x512 (timings do not depend on the weights)."""
    checkpoint = workdir / "nano.pt"
    init_args = [str(REPO / "config/models/nano.yaml"), str(checkpoint), "--classes", "person,car"]
    if fusion_init([*init_args, "--size", f"{SIZE[0]}x{SIZE[1]}"]) != 0:
        raise SystemExit("bench: fusion-init of the nano checkpoint failed")
    return checkpoint


def bench_backends(workdir: Path, rounds: int = 20) -> list[str]:
    """Forward time of every installed backend on the CPU, interleaved (one pass of each per
    round, same input) so load from other processes hits them alike. Exports go to the cache
    (default here: workdir/cache)."""
    os.environ.setdefault(CACHE_ENV, str(workdir / "cache"))
    tune_cpu_allocator()  # as FusionEngine does for the node: torch's CPU time depends on it
    demo = load_checkpoint(REPO / "models" / "demo.pt")
    cases = {
        "nano 640x512": load_checkpoint(nano_checkpoint(workdir)),
        f"lite0 (models/demo.pt) {demo.input_size[0]}x{demo.input_size[1]}": demo,
        "lite0 re-letterboxed to 640x512": dataclasses.replace(demo, input_size=SIZE),
    }
    names = [n for n in reversed(AUTO_ORDER["cpu"]) if n == "torch" or installed(n)]
    device = torch.device("cpu")
    lines = [
        "## Backends (forward pass only, on `Backend.prepare`d inputs (OpenVINO: the uint8 "
        "frame, converted in its graph), CPU, batch 1; median of "
        f"{rounds} interleaved rounds, {torch.get_num_threads()} torch threads)",
        "",
        f"| model | {' | '.join(f'{n} ms' for n in names)} | "
        f"{' | '.join(f'{n} / torch' for n in names[1:])} |",
        "|---|" + "---|" * (2 * len(names) - 1),
    ]
    for label, checkpoint in cases.items():
        model = checkpoint.build_model(device)
        backends = {n: load_backend(checkpoint, model, n, device, False) for n in names}
        frames = check_inputs(checkpoint)
        inputs = {n: backend.prepare(*frames) for n, backend in backends.items()}
        times: dict[str, list[float]] = {n: [] for n in names}
        for round_index in range(rounds + 3):  # the first three are warm-up
            for name, backend in backends.items():
                start = time.perf_counter()
                backend.forward(*inputs[name])
                if round_index >= 3:
                    times[name].append((time.perf_counter() - start) * 1e3)
        median = {n: statistics.median(t) for n, t in times.items()}
        cells = [f"{median[n]:.1f}" for n in names]
        cells += [f"{median[n] / median['torch']:.2f}" for n in names[1:]]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def run_node_bench(checkpoint: Path, workdir: Path, backend: str, *params: str) -> dict | str:
    """tools/node_bench.py in its own process and ROS context; its JSON line, or why it failed."""
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault(CACHE_ENV, str(workdir / "cache"))  # exports reused across runs
    args = [str(REPO / "tools" / "node_bench.py"), str(checkpoint), str(workdir), backend, *params]
    out = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if out.returncode != 0:
        return out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_node(checkpoint: Path, workdir: Path) -> list[str]:
    """The node on every installed CPU backend, one after the other, at 30 Hz input."""
    names = [n for n in reversed(AUTO_ORDER["cpu"]) if n == "torch" or installed(n)]
    results = {name: run_node_bench(checkpoint, workdir, name) for name in names}
    fastest = names[-1]  # AUTO_ORDER's first installed CPU backend
    results[f"{fastest}, pair_policy newest"] = run_node_bench(
        checkpoint, workdir, fastest, "pair_policy:=newest"
    )
    lines = [
        "## Node (synthetic 30 Hz bgr8 + mono16 640x512 → fusion_node, nano → another process)",
        "",
        "| backend | output Hz | rate / torch | p50 ms | p99 ms | forward ms | transport ms | "
        "p50 / (forward + transport) | overhead % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    torch_rate = None
    for name, r in results.items():
        if isinstance(r, str):
            failures.append(f"{name}:\n```\n{r}\n```")
            continue
        rate = r["received"] / r["seconds"]
        torch_rate = rate if name == "torch" else torch_rate
        ratio = f"{rate / torch_rate:.2f}" if torch_rate else "n/a"
        budget = r["forward_ms"] + r["transport_ms"]
        lines.append(
            f"| {name} | {rate:.1f} | {ratio} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['forward_ms']:.1f} | {r['transport_ms']:.1f} | {r['p50_ms'] / budget:.2f} | "
            f"{100 * r['overhead_ms'] / r['total_ms']:.1f} |"
        )
    lines += [
        "",
        "Output Hz: Detection2DArray messages received per second by another process; p50/p99: "
        "end-to-end latency, camera stamp → received; transport: the node's receipt − stamp; "
        "overhead: the worker's time outside the forward pass (decode, normalize, pre/post-"
        "processing, publishing the detections) as a share of its per-pair time; the fused image "
        "is made and published beside it by the image thread (`image_publish` below, not in the "
        "overhead; `images_skipped`: frames it had no time for). Goals (issue 15): output rate "
        "of the fastest backend ≥ 2x torch's, p50 / (forward + transport) ≤ 1.15 (the newest pair "
        "waits on average half a camera period for the worker), overhead ≤ 5 %. The rows above "
        "run the node's default `pair_policy: fresh` (a pair older than half a camera period when "
        "the worker frees waits, at most a period, for the next one); the last row runs the "
        "fastest backend with `pair_policy: newest` (the newest pair at once: a higher output "
        "rate, about half a camera period more latency).",
    ]
    for name, r in results.items():
        if not isinstance(r, str):
            stages = ", ".join(f"{stage} {ms:.2f}" for stage, ms in r["stages_ms"].items())
            lines.append(
                f"- {name}: per-stage means from /diagnostics (ms): {stages}; "
                f"images skipped since the node started: {r['images_skipped']}"
            )
    if failures:
        lines += ["", "Failed runs:", *failures]
    return lines


def bench_trainer(workdir: Path) -> list[str]:
    """Each method trains the study's nano set-up for 2 x 30 steps in this process, the methods
    interleaved (a machine whose load drifts slows them alike); the trainer's own step time (data
    loading excluded) is compared within the run."""
    from fusion_training.config import load_training_config
    from fusion_training.study import DATA, read_log
    from fusion_training.trainer import Trainer

    methods = (
        ("weighted_sum", "weighted_sum", 0),
        ("unitygrad", "unitygrad", 1),
        ("unitygrad_every5", "unitygrad", 5),
        ("pcgrad", "pcgrad", 1),
        ("cagrad", "cagrad", 1),
        ("gradnorm", "gradnorm", 1),
        ("mgda", "mgda", 1),
    )
    setup = DATA["synthetic"]
    lines = [
        "## Trainer (one optimisation step, nano at 128x96, batch 4, CPU, 2 x 30 steps per "
        "method, interleaved)",
        "",
        "| method | ms per step (median after warm-up) | ratio to weighted sum |",
        "|---|---|---|",
    ]
    times: dict[str, list[float]] = {label: [] for label, _, _ in methods}
    for round_, (label, method, every) in itertools.product(range(2), methods):
        out = workdir / "trainer" / f"{label}_{round_}"
        shutil.rmtree(out, ignore_errors=True)
        overrides = {
            **setup.overrides(0),
            "mtl.method": method,
            "mtl.update_every": every,
            "mtl.options": {},
            "max_steps": 30,
            "eval.every": 100,  # no evaluation: timing only
            "device": "cpu",
            "progress": False,
            "output_dir": str(out),
        }
        Trainer(load_training_config(REPO / setup.config, overrides)).fit()
        log = read_log(out / "train_log.csv")
        times[label] += [1e3 * row["step_time_s"] for row in log[5:]]  # after warm-up
    rows = {label: statistics.median(values) for label, values in times.items()}
    for label, ms in rows.items():
        lines.append(f"| {label} | {ms:.1f} | {ms / rows['weighted_sum']:.2f} |")
    lines += [
        "",
        "Goal: a UnityGrad step at most 1.3x the weighted-sum step (nano). Weighted sum runs one "
        "backward pass; measuring both tasks' gradients on the shared parameters needs two, so "
        "UnityGrad recomputing α every step costs more than that; `mtl.update_every: 5` (the demo "
        "model's setting) measures the gradients every fifth step and reuses α in between.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "bench")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=SECTIONS, help="what to measure"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = []
    if "model" in args.sections:
        sections.append(bench_models(args.workdir))
    if "backends" in args.sections:
        sections.append(bench_backends(args.workdir))
    if "node" in args.sections:
        sections.append(bench_node(nano_checkpoint(args.workdir), args.workdir))
    if "trainer" in args.sections:
        sections.append(bench_trainer(args.workdir))
    text = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {started}. Machine: {machine()}.",
        "Absolute times on a shared 2-core machine vary by up to 2x between runs; compare the "
        "ratios, which are measured within one run.",
        "",
    ]
    for section in sections:
        text += [*section, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    print(f"bench: report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
