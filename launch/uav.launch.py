"""Thermal + RGB perception on a UAV: fusion_node, optionally a synthetic camera, rviz and a recorder.

    ros2 launch fusion_perception uav.launch.py rgb_topic:=/camera/color/image_raw \
        thermal_topic:=/thermal/image_raw device:=cuda rviz:=true
"""

import time
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, GroupAction, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace

from launch import LaunchContext, LaunchDescription

SHARE = Path(get_package_share_directory("fusion_perception"))

ARGUMENTS = (
    ("namespace", "", "namespace for every node and topic (one per camera pair)"),
    ("rgb_topic", "rgb/image", "RGB camera topic"),
    ("thermal_topic", "thermal/image", "thermal camera topic (mono16/16UC1 counts, mono8, 32FC1)"),
    ("params_file", str(SHARE / "config" / "uav.yaml"), "fusion_node parameter file"),
    ("checkpoint", "", "model checkpoint; empty = the packaged demo model"),
    ("device", "auto", "auto, cpu, cuda or cuda:N"),
    ("rviz", "false", "start rviz2 with config/uav.rviz"),
    ("record", "false", "record raw cameras, label_info and diagnostics to bag_dir (mcap)"),
    ("bag_dir", "fusion_bags", "parent folder of recorded bags"),
    ("use_synthetic_camera", "false", "publish synthetic RGB + thermal scenes (demo, no cameras)"),
)


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    cfg = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    fusion = Node(
        package="fusion_perception",
        executable="fusion_node",
        name="fusion_node",
        output="screen",
        parameters=[
            cfg["params_file"],
            {
                "rgb_topic": cfg["rgb_topic"],
                "thermal_topic": cfg["thermal_topic"],
                "checkpoint": cfg["checkpoint"],
                "device": cfg["device"],
            },
        ],
    )
    camera = Node(
        package="fusion_perception",
        executable="synthetic_camera",
        name="synthetic_camera",
        output="screen",
        parameters=[{"rgb_topic": cfg["rgb_topic"], "thermal_topic": cfg["thermal_topic"]}],
        condition=IfCondition(cfg["use_synthetic_camera"]),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", str(SHARE / "config" / "uav.rviz")],
        condition=IfCondition(cfg["rviz"]),
    )
    group = GroupAction([PushRosNamespace(cfg["namespace"]), fusion, camera, rviz])
    record = OpaqueFunction(function=recorder, condition=IfCondition(cfg["record"]))
    return LaunchDescription([*args, group, record])


def absolute(namespace: str, topic: str) -> str:
    """The recorder is not namespaced, so relative topic names are resolved here."""
    if topic.startswith("/"):
        return topic
    return "/".join(part.strip("/") for part in ("", namespace, topic) if part.strip("/"))


def camera_info(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport convention)."""
    parent = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{parent}/camera_info" if parent else "camera_info"


def recorder(context: LaunchContext) -> list[ExecuteProcess]:
    """`ros2 bag record` of what is needed to rebuild a dataset from the flight (mcap storage)."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    ns = value["namespace"]
    rgb, thermal = value["rgb_topic"], value["thermal_topic"]
    topics = [
        absolute(ns, rgb),
        absolute(ns, thermal),
        absolute(ns, camera_info(rgb)),
        absolute(ns, camera_info(thermal)),
        absolute(ns, "fusion_node/label_info"),
        "/tf_static",
        "/diagnostics",
    ]
    # One folder per flight: `ros2 bag record` refuses an output folder that already exists.
    output = str(Path(value["bag_dir"]) / time.strftime("fusion_%Y%m%d_%H%M%S"))
    cmd = ["ros2", "bag", "record", "--storage", "mcap", "--output", output, *dict.fromkeys(topics)]
    return [ExecuteProcess(cmd=cmd, output="screen")]
