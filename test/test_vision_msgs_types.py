"""The vision_msgs we build into the venv must be wire- and hash-identical to upstream 4.x."""

from __future__ import annotations

import importlib

import pytest
import rclpy

pytestmark = pytest.mark.ros

# RIHS01 hashes of upstream vision_msgs 4.1.1 (identical for Humble, Jazzy, Kilted).
UPSTREAM_HASHES = {
    "Point2D": "eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "BoundingBox2D": "008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "ObjectHypothesis": "51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Detection2D": "0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "VisionClass": "1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "LabelInfo": "3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "VisionInfo": "95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}


def test_type_hashes_match_upstream(ros_context) -> None:
    msgs = importlib.import_module("vision_msgs.msg")
    node = rclpy.create_node("hash_checker", context=ros_context)
    try:
        for name in UPSTREAM_HASHES:
            node.create_publisher(getattr(msgs, name), f"hash_check/{name}", 1)
        for name, expected in UPSTREAM_HASHES.items():
            (info,) = node.get_publishers_info_by_topic(f"/hash_check/{name}")
            assert str(info.topic_type_hash) == f"RIHS01_{expected}", name
    finally:
        node.destroy_node()
