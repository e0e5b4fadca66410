"""Two processes over real DDS on loopback: images and detections arrive intact."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from processes.frame_publisher import detections, frame_pixels
from ros_process import running

pytestmark = pytest.mark.ros

FRAMES_WANTED = 3


def test_images_and_detections_cross_processes_intact(ros_context, tmp_path) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from fusion_perception.ros.image_conversions import msg_to_image

    received: dict[str, list] = {"rgb": [], "thermal": [], "detections": []}
    node = rclpy.create_node("frame_checker", context=ros_context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def keep(kind: str):
        def callback(msg) -> None:
            if len(received[kind]) < FRAMES_WANTED:
                received[kind].append(msg)

        return callback

    node.create_subscription(Image, "test/rgb", keep("rgb"), qos)
    node.create_subscription(Image, "test/thermal", keep("thermal"), qos)
    node.create_subscription(Detection2DArray, "test/detections", keep("detections"), qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    with running(["test/processes/frame_publisher.py"], tmp_path / "publisher.log") as proc:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            len(v) < FRAMES_WANTED for v in received.values()
        ):
            executor.spin_once(timeout_sec=0.1)
            assert proc.poll() is None, (tmp_path / "publisher.log").read_text()
    node.destroy_node()

    assert all(len(v) == FRAMES_WANTED for v in received.values()), {
        k: len(v) for k, v in received.items()
    }
    # Each message carries its own frame index: the subscriptions may start at different frames.
    for rgb in received["rgb"]:
        assert rgb.encoding == "bgr8"
        np.testing.assert_array_equal(msg_to_image(rgb), frame_pixels(int(rgb.header.frame_id))[0])
    for thermal in received["thermal"]:
        assert thermal.encoding == "mono16"
        expected = frame_pixels(int(thermal.header.frame_id))[1]
        np.testing.assert_array_equal(msg_to_image(thermal), expected)
    for got in received["detections"]:
        want = detections(int(got.header.frame_id))
        assert len(got.detections) == len(want.detections)
        for g, w in zip(got.detections, want.detections, strict=True):
            assert g.header.frame_id == w.header.frame_id
            assert (g.bbox.center.position.x, g.bbox.center.position.y) == (
                w.bbox.center.position.x,
                w.bbox.center.position.y,
            )
            assert g.bbox.center.theta == w.bbox.center.theta
            assert (g.bbox.size_x, g.bbox.size_y) == (w.bbox.size_x, w.bbox.size_y)
            assert g.results[0].hypothesis.class_id == w.results[0].hypothesis.class_id
            assert g.results[0].hypothesis.score == w.results[0].hypothesis.score
