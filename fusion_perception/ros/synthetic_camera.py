"""synthetic_camera: a stand-in for an RGB + thermal camera pair, with ground truth.

Publishes bgr8 RGB and mono16 thermal (raw counts, as radiometric cameras send them) of moving people
and vehicles, day or night, plus the true boxes as a Detection2DArray. Rates, a thermal stamp offset,
stamp jitter and the image size are parameters, so the node's pairing can be exercised like real
drivers exercise it.
"""

from __future__ import annotations

import sys

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from fusion_perception.engine import Detections
from fusion_perception.ros.image_conversions import image_to_msg
from fusion_perception.ros.messages import detections_to_msg
from fusion_perception.ros.spin import spin_node
from fusion_perception.synthetic import SceneGenerator

PARAMETERS = {
    "rgb_topic": ("rgb/image", "RGB output topic (bgr8)"),
    "thermal_topic": ("thermal/image", "thermal output topic (mono16 raw counts)"),
    "ground_truth_topic": ("synthetic/ground_truth", "true boxes as Detection2DArray"),
    "rate": (30.0, "RGB frames per second"),
    "thermal_rate": (0.0, "thermal frames per second; 0 = same as rate"),
    "thermal_offset": (0.0, "seconds added to thermal stamps (a lagging driver)"),
    "jitter": (0.0, "standard deviation of stamp jitter, seconds"),
    "width": (640, "image width"),
    "height": (512, "image height"),
    "night_probability": (0.5, "share of night scenes (0 = always day, 1 = always night)"),
    "scene_seconds": (10.0, "a new random scene starts after this many seconds"),
    "rotated": (False, "UAV top-down view with oriented boxes"),
    "seed": (0, "random seed"),
    "reliability": ("reliable", "publisher reliability: reliable or best_effort"),
    "frame_id": ("camera", "header.frame_id of every message"),
}


class SyntheticCamera(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("synthetic_camera", **kwargs)
        p = {
            name: self.declare_parameter(name, default, ParameterDescriptor(description=text)).value
            for name, (default, text) in PARAMETERS.items()
        }
        if p["rate"] <= 0:
            raise ValueError(f"parameter rate: {p['rate']} must be > 0")
        if p["reliability"] not in ("reliable", "best_effort"):
            raise ValueError(
                f"parameter reliability: {p['reliability']!r} is not reliable/best_effort"
            )
        self.p = p
        self.rng = np.random.default_rng(p["seed"])
        self.scene_index = 0
        self.generator = self._new_generator()
        qos = QoSProfile(
            depth=5,
            reliability=ReliabilityPolicy.RELIABLE
            if p["reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self.pub_rgb = self.create_publisher(Image, p["rgb_topic"], qos)
        self.pub_thermal = self.create_publisher(Image, p["thermal_topic"], qos)
        self.pub_truth = self.create_publisher(Detection2DArray, p["ground_truth_topic"], 10)
        self.thermal_period = 1.0 / (p["thermal_rate"] or p["rate"])
        self.thermal_due = 0.0
        self.t = 0.0
        self.create_timer(1.0 / p["rate"], self._tick)

    def _new_generator(self) -> SceneGenerator:
        return SceneGenerator(
            self.p["width"],
            self.p["height"],
            seed=self.p["seed"] + self.scene_index,
            night_probability=self.p["night_probability"],
            rotated=self.p["rotated"],
        )

    def _stamp(self, base_ns: int, offset_s: float) -> Time:
        jitter = self.rng.normal(0.0, self.p["jitter"]) if self.p["jitter"] > 0 else 0.0
        return Time(nanoseconds=base_ns + round((offset_s + jitter) * 1e9)).to_msg()

    def _tick(self) -> None:
        period = 1.0 / self.p["rate"]
        if self.t >= self.p["scene_seconds"]:
            self.scene_index += 1
            self.generator = self._new_generator()
            self.t = 0.0
        scene = self.generator.render(self.t)
        now_ns = self.get_clock().now().nanoseconds
        rgb = image_to_msg(np.ascontiguousarray(scene.rgb[:, :, ::-1]), "bgr8")
        rgb.header.stamp = self._stamp(now_ns, 0.0)
        rgb.header.frame_id = self.p["frame_id"]
        self.pub_rgb.publish(rgb)
        truth = detections_to_msg(
            rgb.header,
            Detections(scene.boxes, np.ones(len(scene.labels), np.float32), scene.labels),
        )
        self.pub_truth.publish(truth)
        self.thermal_due -= period
        if self.thermal_due <= 1e-9:
            self.thermal_due += self.thermal_period
            thermal = image_to_msg(scene.thermal_raw, "mono16")
            thermal.header.stamp = self._stamp(now_ns, self.p["thermal_offset"])
            thermal.header.frame_id = self.p["frame_id"]
            self.pub_thermal.publish(thermal)
        self.t += period


def main(args: list[str] | None = None) -> int:
    return spin_node(SyntheticCamera, "synthetic_camera", args)


if __name__ == "__main__":
    sys.exit(main())
