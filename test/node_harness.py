"""A test-side ROS node that feeds fusion_node and records everything it publishes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from fusion_perception.ros.image_conversions import image_to_msg

WIDTH, HEIGHT = 640, 512


def vifb_pair(vifb_dir: Path, name: str = "manCar") -> tuple[np.ndarray, np.ndarray]:
    """A real registered pair at 640x512: bgr8 and mono16 (8-bit IR spread over 14-bit counts)."""
    bgr = cv2.resize(cv2.imread(str(vifb_dir / "vis" / f"{name}.jpg")), (WIDTH, HEIGHT))
    ir = cv2.imread(str(vifb_dir / "ir" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    thermal = (cv2.resize(ir, (WIDTH, HEIGHT)).astype(np.uint16) * 12 + 6000).astype(np.uint16)
    return bgr, thermal


class Harness:
    def __init__(self, context, prefix: str = "fusion_node", best_effort_inputs: bool = False):
        self.node = rclpy.create_node("fusion_test_harness", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        reliability = (
            ReliabilityPolicy.BEST_EFFORT if best_effort_inputs else ReliabilityPolicy.RELIABLE
        )
        qos = QoSProfile(depth=5, reliability=reliability)
        self.pub_rgb = self.node.create_publisher(Image, "rgb/image", qos)
        self.pub_thermal = self.node.create_publisher(Image, "thermal/image", qos)
        self.detections: list[tuple[float, Detection2DArray]] = []
        self.fused: list[Image] = []
        self.label_info: list[LabelInfo] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(
            Detection2DArray,
            f"{prefix}/detections",
            lambda m: self.detections.append((time.time(), m)),
            10,
        )
        self.node.create_subscription(Image, f"{prefix}/fused/image", self.fused.append, 2)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(
            LabelInfo, f"{prefix}/label_info", self.label_info.append, latched
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.stamp_ns = time.time_ns()

    def next_stamp(self):
        """Wall-clock stamps (the node checks pair age), strictly increasing."""
        self.stamp_ns = max(time.time_ns(), self.stamp_ns + 1_000_000)
        return rclpy.time.Time(nanoseconds=self.stamp_ns).to_msg()

    def publish_pair(
        self,
        bgr: np.ndarray,
        thermal: np.ndarray,
        thermal_encoding: str = "mono16",
        frame_id: str = "rgb_optical",
        stamp_ns: int | None = None,
    ) -> Image:
        stamp = (
            self.next_stamp()
            if stamp_ns is None
            else rclpy.time.Time(nanoseconds=stamp_ns).to_msg()
        )
        rgb = image_to_msg(bgr, "bgr8")
        ir = image_to_msg(thermal, thermal_encoding)
        rgb.header.stamp = ir.header.stamp = stamp
        rgb.header.frame_id, ir.header.frame_id = frame_id, "thermal_optical"
        self.pub_rgb.publish(rgb)
        self.pub_thermal.publish(ir)
        return rgb

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def wait_for_node(self, bgr: np.ndarray, thermal: np.ndarray, timeout: float = 60.0) -> None:
        """Wait until fusion_node answers a pair end to end, then forget that answer.

        Seeing its subscriptions is not enough: discovery is not symmetric, and frames sent before
        the node has matched our publishers are lost (best effort), so pairs are re-sent until one
        comes back.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.detections:
            if self.pub_rgb.get_subscription_count() and self.pub_thermal.get_subscription_count():
                self.publish_pair(bgr, thermal)
            self.spin_until(lambda: bool(self.detections), 0.5)
        assert self.detections, "fusion_node did not answer within the timeout"
        self.spin_until(lambda: False, 0.3)
        self.detections.clear()
        self.fused.clear()

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
