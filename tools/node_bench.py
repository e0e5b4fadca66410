"""Node benchmark (run by tools/bench.py): 30 Hz synthetic cameras -> fusion_node -> this process.

Usage: node_bench.py CHECKPOINT WORKDIR [BACKEND [NAME:=VALUE ...]] (the node's ``backend``
parameter, torch by default, and any other node parameters).

Prints one JSON line: frames published/received, end-to-end latency percentiles, and the node's own
per-stage timings read from /diagnostics.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from fusion_perception.ros.image_conversions import image_to_msg
from fusion_perception.synthetic import SceneGenerator

RATE_HZ, SECONDS, WARMUP_S = 30.0, 20.0, 3.0


def main(checkpoint: str, workdir: str, backend: str = "torch", *params: str) -> int:
    frames = [SceneGenerator(640, 512, seed=1).render(t / RATE_HZ) for t in range(30)]
    suffix = "".join(f"_{p.split(':=')[0]}" for p in params)
    log = (Path(workdir) / f"node_bench_{backend}{suffix}.log").open("w")
    node_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusion_perception.ros.fusion_node",
            "--ros-args",
            "-p",
            f"checkpoint:={checkpoint}",
            "-p",
            "publish.annotated:=false",
            "-p",
            "diagnostics_period:=0.5",
            "-p",
            f"backend:={backend}",
            *[a for p in params for a in ("-p", p)],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rclpy.init()
    node = rclpy.create_node("node_bench")
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub_rgb = node.create_publisher(Image, "rgb/image", qos)
    pub_th = node.create_publisher(Image, "thermal/image", qos)
    latencies: list[float] = []
    diagnostics: dict[str, str] = {}

    def on_detections(msg: Detection2DArray) -> None:
        stamp = msg.header.stamp.sec * 1e9 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - stamp) / 1e6)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("pipeline"):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(Detection2DArray, "fusion_node/detections", on_detections, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    # A viewer of the fused image, as rviz would be: its conversion and publishing are counted.
    fused_frames: list[int] = []
    node.create_subscription(
        Image, "fusion_node/fused/image", lambda msg: fused_frames.append(msg.width), qos
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    published = 0
    try:
        deadline = time.monotonic() + 90
        while not latencies and time.monotonic() < deadline:  # node up and answering
            scene = frames[0]
            for pub, msg in (
                (pub_rgb, image_to_msg(scene.rgb[:, :, ::-1].copy(), "bgr8")),
                (pub_th, image_to_msg(scene.thermal_raw, "mono16")),
            ):
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
            executor.spin_once(timeout_sec=0.3)
        messages = [
            (image_to_msg(f.rgb[:, :, ::-1].copy(), "bgr8"), image_to_msg(f.thermal_raw, "mono16"))
            for f in frames
        ]
        start = time.monotonic()
        next_frame = start
        while time.monotonic() - start < WARMUP_S + SECONDS:
            now = time.monotonic()
            if now >= next_frame:
                if now - start < WARMUP_S:
                    latencies.clear()
                rgb, thermal = messages[published % len(messages)]
                rgb.header.stamp = thermal.header.stamp = node.get_clock().now().to_msg()
                pub_rgb.publish(rgb)
                pub_th.publish(thermal)
                published += 1
                next_frame += 1.0 / RATE_HZ
            executor.spin_once(timeout_sec=max(0.0, min(0.005, next_frame - time.monotonic())))
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        node_proc.send_signal(signal.SIGINT)
        node_proc.wait(timeout=15)
        node.destroy_node()
        rclpy.try_shutdown()
    forward = float(diagnostics.get("forward_ms", "nan"))
    total = float(diagnostics.get("total_ms", "nan"))
    result = {
        "backend": diagnostics.get("backend", "?"),
        "published": published,
        "seconds": SECONDS,
        "received": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "forward_ms": forward,
        "total_ms": total,
        "overhead_ms": total - forward,
        "transport_ms": float(diagnostics.get("rgb_receive_delay_ms", "nan")),
        "dropped": int(diagnostics.get("rgb_dropped", 0)),
        "stale": int(diagnostics.get("stale_pairs", 0)),
        "images_skipped": int(diagnostics.get("images_skipped", 0)),
        "fused_received": len(fused_frames),
        "stages_ms": {
            stage: float(diagnostics.get(f"{stage}_ms", "nan"))
            for stage in (
                "decode",
                "normalize",
                "preprocess",
                "forward",
                "postprocess",
                "publish",
                "image_publish",
            )
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
