"""fusion-demo: the whole system on one machine, no cameras needed.

Starts `synthetic_camera` and `fusion_node` as real processes on loopback DDS (the graph
`uav.launch.py use_synthetic_camera:=true` starts), watches their topics for a while like rviz would,
and writes demo_out/: sample fused and annotated images, every detection, precision and recall against
the synthetic ground truth (day and night separately), end-to-end latency and a latency plot.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from fusion_perception.boxes import box_iou_rotated
from fusion_perception.pairing import header_stamp_ns
from fusion_perception.ros.configure import default_checkpoint
from fusion_perception.ros.image_conversions import msg_to_image

IOU_MATCH = 0.5
NIGHT_LUMA = 60.0  # mean RGB luma below this: a night frame
FIRST_OUTPUT_TIMEOUT = 60.0  # s for the node to load the model and answer


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to watch")
    parser.add_argument("--checkpoint", default="", help="default: the packaged demo model")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="fusion_node score_threshold for the demo (the summary's operating point)",
    )
    return parser


def boxes_of(msg: Detection2DArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array(
        [
            [
                d.bbox.center.position.x,
                d.bbox.center.position.y,
                d.bbox.size_x,
                d.bbox.size_y,
                d.bbox.center.theta,
            ]
            for d in msg.detections
        ],
        dtype=np.float64,
    ).reshape(-1, 5)
    labels = np.array([int(d.results[0].hypothesis.class_id) for d in msg.detections], np.int64)
    scores = np.array([d.results[0].hypothesis.score for d in msg.detections], np.float64)
    return boxes, labels, scores


def match_counts(pred: Detection2DArray, truth: Detection2DArray) -> tuple[int, int, int]:
    """(true positives, predictions, ground-truth objects) with greedy same-class IoU >= 0.5."""
    p_boxes, p_labels, p_scores = boxes_of(pred)
    t_boxes, t_labels, _ = boxes_of(truth)
    if len(p_boxes) == 0 or len(t_boxes) == 0:
        return 0, len(p_boxes), len(t_boxes)
    iou = box_iou_rotated(torch.from_numpy(p_boxes), torch.from_numpy(t_boxes)).numpy()
    iou[p_labels[:, None] != t_labels[None, :]] = 0.0
    taken = np.zeros(len(t_boxes), bool)
    tp = 0
    for i in np.argsort(-p_scores):
        candidates = np.where(~taken & (iou[i] >= IOU_MATCH))[0]
        if len(candidates):
            taken[candidates[np.argmax(iou[i, candidates])]] = True
            tp += 1
    return tp, len(p_boxes), len(t_boxes)


class Watcher:
    """Subscribes like rviz would and keeps what the summary needs."""

    def __init__(self, context, out: Path) -> None:
        self.node = rclpy.create_node("fusion_demo_watcher", context=context)
        self.out = out
        self.detections: dict[int, tuple[float, Detection2DArray]] = {}
        self.truth: dict[int, Detection2DArray] = {}
        self.night: dict[int, bool] = {}
        self.label_info: LabelInfo | None = None
        self.samples: dict[str, int] = {"day": 0, "night": 0}
        self.latest_annotated: Image | None = None
        self.latest_fused: Image | None = None
        self._last_sample: dict[str, int] = {}
        n = self.node
        n.create_subscription(Detection2DArray, "fusion_node/detections", self._on_detections, 50)
        n.create_subscription(Detection2DArray, "synthetic/ground_truth", self._on_truth, 50)
        n.create_subscription(Image, "rgb/image", self._on_rgb, 5)
        n.create_subscription(Image, "fusion_node/fused/image", self._on_fused, 2)
        n.create_subscription(Image, "fusion_node/detections/image", self._on_annotated, 2)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(LabelInfo, "fusion_node/label_info", self._on_labels, latched)

    def _on_detections(self, msg: Detection2DArray) -> None:
        self.detections[header_stamp_ns(msg)] = (time.time(), msg)

    def _on_truth(self, msg: Detection2DArray) -> None:
        self.truth[header_stamp_ns(msg)] = msg

    def _on_rgb(self, msg: Image) -> None:
        luma = float(msg_to_image(msg)[::8, ::8].mean())
        self.night[header_stamp_ns(msg)] = luma < NIGHT_LUMA

    def _on_labels(self, msg: LabelInfo) -> None:
        self.label_info = msg

    def _on_fused(self, msg: Image) -> None:
        self.latest_fused = msg

    def _on_annotated(self, msg: Image) -> None:
        """Keep a few samples of day and of night (paired with the fused image of the same stamp)."""
        key = header_stamp_ns(msg)
        kind = "night" if self.night.get(key) else "day"
        fused = self.latest_fused
        if self.samples[kind] >= 3 or fused is None or header_stamp_ns(fused) != key:
            return
        if self.samples[kind] and key - self._last_sample.get(kind, 0) < 2_000_000_000:
            return
        self._last_sample[kind] = key
        index = self.samples[kind]
        self.samples[kind] += 1
        cv2.imwrite(str(self.out / f"annotated_{kind}_{index}.png"), msg_to_image(msg))
        cv2.imwrite(str(self.out / f"fused_{kind}_{index}.png"), msg_to_image(fused))


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return subprocess.Popen(
        [sys.executable, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def summarize(watcher: Watcher, out: Path, seconds: float, score_threshold: float) -> dict:
    counts = {"day": [0, 0, 0, 0], "night": [0, 0, 0, 0]}  # tp, predictions, objects, frames
    latencies = []
    records = []
    names = [c.class_name for c in watcher.label_info.class_map] if watcher.label_info else []
    for key, (received, det) in sorted(watcher.detections.items()):
        latencies.append((key, (received * 1e9 - key) / 1e6))
        boxes, labels, scores = boxes_of(det)
        for box, label, score in zip(boxes, labels, scores, strict=True):
            records.append(
                {
                    "stamp_ns": key,
                    "class_id": int(label),
                    "class_name": names[label] if label < len(names) else str(label),
                    "score": round(float(score), 4),
                    "bbox": [round(float(v), 2) for v in box[:4]],
                    "angle": round(float(box[4]), 4),
                }
            )
        truth = watcher.truth.get(key)
        if truth is None or key not in watcher.night:
            continue
        tp, n_pred, n_true = match_counts(det, truth)
        bucket = counts["night" if watcher.night[key] else "day"]
        bucket[0] += tp
        bucket[1] += n_pred
        bucket[2] += n_true
        bucket[3] += 1
    with (out / "detections.jsonl").open("w") as stream:
        stream.writelines(json.dumps(r) + "\n" for r in records)
    lat = np.array([v for _, v in latencies]) if latencies else np.zeros(0)
    summary = {
        "seconds": seconds,
        "score_threshold": score_threshold,
        "frames_with_detections": len(watcher.detections),
        "output_rate_hz": round(len(watcher.detections) / seconds, 2),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
    }
    for kind, (tp, n_pred, n_true, frames) in counts.items():
        summary[kind] = {
            "frames_scored": frames,
            "precision": round(tp / n_pred, 3) if n_pred else None,
            "recall": round(tp / n_true, 3) if n_true else None,
            "true_positives": tp,
            "predictions": n_pred,
            "objects": n_true,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_latency(latencies, out / "latency.png")
    return summary


def plot_latency(latencies: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    if latencies:
        t0 = latencies[0][0]
        ax.plot([(k - t0) / 1e9 for k, _ in latencies], [v for _, v in latencies], lw=1)
    ax.set_xlabel("camera time (s)")
    ax.set_ylabel("stamp → detections received (ms)")
    ax.set_title("End-to-end latency, synthetic camera → fusion_node → another process")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def watch(
    watcher: Watcher,
    executor: SingleThreadedExecutor,
    children: dict[str, subprocess.Popen],
    args: argparse.Namespace,
) -> str:
    """Spin until the first detections, then for `args.duration` s; returns why it failed, or ''.

    A child that exits or a node that never answers is a failed demo, not an empty summary.
    """
    deadline = time.monotonic() + FIRST_OUTPUT_TIMEOUT
    watch_end = None
    while watch_end is None or time.monotonic() < watch_end:
        executor.spin_once(timeout_sec=0.05)
        for name, proc in children.items():
            if proc.poll() is not None:
                return (
                    f"{name} exited with code {proc.returncode}; see {args.out / (name + '.log')}"
                )
        if watch_end is None:
            if watcher.detections:
                watch_end = time.monotonic() + args.duration
            elif time.monotonic() > deadline:
                return (
                    f"no detections from fusion_node within {FIRST_OUTPUT_TIMEOUT:.0f} s; "
                    f"see {args.out / 'fusion_node.log'}"
                )
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    checkpoint = args.checkpoint or str(default_checkpoint())
    if not Path(checkpoint).is_file():
        print(f"fusion-demo: error: checkpoint {checkpoint} not found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    from ament_index_python.packages import get_package_share_directory

    params = Path(get_package_share_directory("fusion_perception")) / "config" / "uav.yaml"
    camera = start(
        [
            "-m",
            "fusion_perception.ros.synthetic_camera",
            "--ros-args",
            "-p",
            f"rate:={args.rate}",
            "-p",
            "scene_seconds:=5.0",
            "-p",
            "night_probability:=0.5",
        ],
        args.out / "synthetic_camera.log",
    )
    node = start(
        [
            "-m",
            "fusion_perception.ros.fusion_node",
            "--ros-args",
            "--params-file",
            str(params),
            # No checkpoint given: the node itself falls back to the packaged demo model.
            *(["-p", f"checkpoint:={args.checkpoint}"] if args.checkpoint else []),
            "-p",
            f"device:={args.device}",
            "-p",
            f"score_threshold:={args.score_threshold}",
        ],
        args.out / "fusion_node.log",
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    watcher = Watcher(context, args.out)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher.node)
    print(
        f"fusion-demo: camera + fusion_node running ({checkpoint}); watching {args.duration:.0f} s"
    )
    try:
        failure = watch(watcher, executor, {"synthetic_camera": camera, "fusion_node": node}, args)
    finally:
        stop(camera)
        stop(node)
        executor.remove_node(watcher.node)
        watcher.node.destroy_node()
        context.try_shutdown()
    if failure:
        print(f"fusion-demo: error: {failure}", file=sys.stderr)
        return 1
    summary = summarize(watcher, args.out, args.duration, args.score_threshold)
    print(json.dumps(summary, indent=2))
    print(
        f"fusion-demo: results in {args.out.resolve()}/ (summary.json, detections.jsonl, "
        "latency.png, fused_*.png, annotated_*.png)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
