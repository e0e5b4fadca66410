"""The whole data loop, every stage real: synthetic camera -> rosbag2 (raw rclpy subscription into a
rosbags writer) -> fusion-bag2dataset -> fusion-train -> fusion-eval -> fusion_node runs the result."""

from __future__ import annotations

import json
import math
import time

import pytest
import rclpy
from conftest import REPO
from node_harness import Harness
from ros_process import running

pytestmark = [pytest.mark.ros, pytest.mark.slow]
TOPICS = ("/rgb/image", "/thermal/image")


def record(context, bag_dir, messages: int, timeout: float = 60.0) -> int:
    """A minimal recorder: raw CDR from rclpy straight into an mcap rosbag2."""
    from rclpy.executors import SingleThreadedExecutor
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Image

    typestore = get_typestore(Stores.ROS2_KILTED)
    node = rclpy.create_node("loop_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    count = 0
    with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            topic: writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=typestore)
            for topic in TOPICS
        }

        def keep(topic):
            def callback(raw: bytes) -> None:
                nonlocal count
                writer.write(connections[topic], time.time_ns(), raw)
                count += 1

            return callback

        for topic in TOPICS:
            node.create_subscription(Image, topic, keep(topic), 20, raw=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end and count < messages:
            executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)
    node.destroy_node()
    return count


def test_camera_to_bag_to_dataset_to_training_to_node(ros_context, tmp_path, node_checkpoint):
    from fusion_training.cli import bag2dataset, train
    from fusion_training.cli import eval as fusion_eval
    from fusion_training.datasets import build_dataset

    camera_args = ["-m", "fusion_perception.ros.synthetic_camera", "--ros-args"]
    camera_args += ["-p", "rate:=10.0", "-p", "width:=320", "-p", "height:=256"]
    with running(camera_args, tmp_path / "camera.log"):
        written = record(ros_context, tmp_path / "flight", messages=60)
    assert written >= 40, (tmp_path / "camera.log").read_text()

    dataset_dir = tmp_path / "dataset"
    args = [str(tmp_path / "flight"), "--rgb-topic", TOPICS[0], "--thermal-topic", TOPICS[1]]
    args += ["--out", str(dataset_dir), "--pseudo-labels", str(node_checkpoint)]
    args += ["--score-threshold", "0.0", "--device", "cpu", "--no-progress"]
    args += ["--normalization", "fixed_range", "--range-lo", "5000", "--range-hi", "12000"]
    assert bag2dataset.main(args) == 0
    dataset = build_dataset("folder", dataset_dir)
    assert len(dataset) >= 15 and list(dataset.class_names) == ["person", "car"]

    run_dir = tmp_path / "run"
    train_args = ["--config", str(REPO / "config/training/synthetic_nano.yaml")]
    train_args += ["--data", str(dataset_dir), "--out", str(run_dir), "--max-steps", "4"]
    train_args += ["--device", "cpu", "--set", "dataset.format=folder", "--set", "dataset.val=null"]
    train_args += [
        "--set",
        "dataset.options={}",
        "--set",
        "dataset.train={}",
        "--set",
        "progress=false",
    ]
    assert train.main(train_args) == 0
    checkpoint = run_dir / "last.pt"
    assert checkpoint.is_file()

    metrics_file = tmp_path / "metrics.json"
    eval_args = ["--checkpoint", str(checkpoint), "--data", str(dataset_dir), "--format", "folder"]
    assert fusion_eval.main([*eval_args, "--out", str(metrics_file), "--device", "cpu"]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert all(math.isfinite(metrics["fusion"][k]) for k in ("EN", "SD", "MI", "SSIM"))
    assert "mAP50" in metrics["detection"]

    item = dataset[0]
    harness = Harness(ros_context)
    node_args = ["-m", "fusion_perception.ros.fusion_node", "--ros-args"]
    node_args += ["-p", f"checkpoint:={checkpoint}", "-p", "score_threshold:=0.0"]
    with running(node_args, tmp_path / "node.log"):
        bgr = item["rgb"][:, :, ::-1].copy()
        thermal = (item["thermal"] * 7000 + 5000).astype("uint16")
        harness.wait_for_node(bgr, thermal)
        harness.publish_pair(bgr, thermal)
        assert harness.spin_until(lambda: bool(harness.detections), 20)
    harness.close()
    assert harness.label_info[0].class_map[1].class_name == "car"
