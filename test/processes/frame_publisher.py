"""Publishes deterministic bgr8 + mono16 frames and a Detection2DArray until stopped (two-process test).

Frame i's pixels come from a generator seeded with i, so the receiver can rebuild them and compare
pixel for pixel; the frame index travels in header.frame_id.
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose

from fusion_perception.ros.image_conversions import image_to_msg

WIDTH, HEIGHT = 640, 512


def frame_pixels(index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    bgr = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    thermal = rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    return bgr, thermal


def detections(index: int) -> Detection2DArray:
    out = Detection2DArray()
    out.header.frame_id = str(index)
    for k in range(3):
        det = Detection2D()
        det.header = out.header
        det.bbox = BoundingBox2D()
        det.bbox.center.position.x = 10.5 * (k + 1) + index
        det.bbox.center.position.y = 20.25 * (k + 1)
        det.bbox.center.theta = 0.1 * k
        det.bbox.size_x, det.bbox.size_y = 30.0 + k, 40.0 + k
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(k)
        hyp.hypothesis.score = 0.5 + 0.1 * k
        det.results.append(hyp)
        out.detections.append(det)
    return out


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("frame_publisher")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rgb_pub = node.create_publisher(Image, "test/rgb", qos)
    thermal_pub = node.create_publisher(Image, "test/thermal", qos)
    det_pub = node.create_publisher(Detection2DArray, "test/detections", qos)
    index = 0

    def publish() -> None:
        nonlocal index
        bgr, thermal = frame_pixels(index)
        stamp = node.get_clock().now().to_msg()
        rgb = image_to_msg(bgr, "bgr8")
        ir = image_to_msg(thermal, "mono16")
        for msg in (rgb, ir):
            msg.header.stamp = stamp
            msg.header.frame_id = str(index)
        rgb_pub.publish(rgb)
        thermal_pub.publish(ir)
        det_pub.publish(detections(index))
        index += 1

    node.create_timer(0.1, publish)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
