"""Thermal + RGB perception on a UAV: fusion_node, optionally a synthetic camera, rviz and a recorder.

    ros2 launch fusion_perception uav.launch.py rgb_topic:=/camera/color/image_raw \
        thermal_topic:=/thermal/image_raw device:=cuda rviz:=true

`params_file` holds fusion_node's parameters. The four launch arguments that name a node parameter
(rgb_topic, thermal_topic, checkpoint, device) default to '', which means "not given": the
parameter file decides (and the node's own default where the file does not set it). Only the
arguments actually given are passed on as overrides. rviz and the recorder are set up with the
topics that result, so they always show and record what the node subscribes to.

fusion_node is a lifecycle node and this file drives it: it starts the node with its `autostart`
parameter off, then asks for configure and, once inactive, activate. With autostart:=false it
leaves the node unconfigured for a lifecycle manager (nav2_lifecycle_manager, `ros2 lifecycle set`).

rviz2 (rviz:=true) and ros2bag with rosbag2_storage_mcap (record:=true) are only needed for those
options; a headless robot can leave them out (see the README).
"""

import atexit
import os
import re
import tempfile
import time
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    GroupAction,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node, PushRosNamespace
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchContext, LaunchDescription

SHARE = Path(get_package_share_directory("fusion_perception"))
NODE_NAME = "fusion_node"
NOT_GIVEN = ""

ARGUMENTS = (
    ("namespace", "", "namespace for every node and topic (one per camera pair)"),
    ("rgb_topic", NOT_GIVEN, "RGB camera topic; empty = params_file's rgb_topic"),
    (
        "thermal_topic",
        NOT_GIVEN,
        "thermal camera topic (mono16/16UC1 counts, mono8, 32FC1); empty = params_file's",
    ),
    ("params_file", str(SHARE / "config" / "uav.yaml"), "fusion_node parameter file"),
    (
        "checkpoint",
        NOT_GIVEN,
        "model checkpoint; empty = params_file's checkpoint ('' there = the packaged demo model)",
    ),
    ("device", NOT_GIVEN, "auto, cpu, cuda or cuda:N; empty = params_file's device"),
    ("rviz", "false", "start rviz2 showing the fused, annotated and thermal images"),
    ("record", "false", "record raw cameras, label_info and diagnostics to bag_dir (mcap)"),
    ("bag_dir", "fusion_bags", "parent folder of recorded bags"),
    ("use_synthetic_camera", "false", "publish synthetic RGB + thermal scenes (demo, no cameras)"),
    (
        "autostart",
        "true",
        "configure and activate fusion_node (false: leave it unconfigured for a lifecycle manager)",
    ),
)

# Launch arguments that override the fusion_node parameter of the same name when given, and
# that parameter's default in the node (fusion_perception/ros/params.py; a test keeps them equal).
NODE_PARAMETERS = {
    "rgb_topic": "rgb/image",
    "thermal_topic": "thermal/image",
    "checkpoint": "",
    "device": "auto",
}

# rviz displays of config/uav.rviz (by Name) -> the topic each shows, relative to the namespace.
RVIZ_DISPLAYS = {
    "Fused": f"{NODE_NAME}/fused/image",
    "Detections": f"{NODE_NAME}/detections/image",
    "Thermal (raw)": "{thermal_topic}",
}


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
    return LaunchDescription([*args, OpaqueFunction(function=launch_setup)])


def launch_setup(context: LaunchContext) -> list:
    """The actions, once the argument values are known."""
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    ns = value["namespace"]
    params_file = value["params_file"]
    given = {name: value[name] for name in NODE_PARAMETERS if value[name] != NOT_GIVEN}
    used = effective_parameters(params_file, fully_qualified(ns, NODE_NAME), given)
    fusion = LifecycleNode(
        package="fusion_perception",
        executable="fusion_node",
        name=NODE_NAME,
        namespace="",  # the pushed namespace applies
        output="screen",
        # Later entries win, so an argument that was given beats the file; one that was not
        # given is not passed at all and the file's value stays. This file drives the
        # lifecycle, so the node never starts itself.
        parameters=[
            *([params_file] if params_file else []),
            *([given] if given else []),
            {"autostart": False},
        ],
    )
    actions = [PushRosNamespace(ns), fusion]
    if flag(value, "autostart"):
        actions += lifecycle_start(fusion)
    if flag(value, "use_synthetic_camera"):
        topics = {"rgb_topic": used["rgb_topic"], "thermal_topic": used["thermal_topic"]}
        actions.append(
            Node(
                package="fusion_perception",
                executable="synthetic_camera",
                name="synthetic_camera",
                output="screen",
                parameters=[topics],
            )
        )
    if flag(value, "rviz"):
        config = rviz_config(SHARE / "config" / "uav.rviz", ns, used)
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", config]))
    result: list = [GroupAction(actions)]
    if flag(value, "record"):
        result.append(recorder(value, used))
    return result


def lifecycle_start(fusion: LifecycleNode) -> list:
    """Configure `fusion` at once, and activate it when it reaches inactive."""

    def transition(transition_id: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(fusion), transition_id=transition_id
            )
        )

    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=fusion,
            goal_state="inactive",
            entities=[transition(Transition.TRANSITION_ACTIVATE)],
        )
    )
    return [activate, transition(Transition.TRANSITION_CONFIGURE)]


def flag(value: dict[str, str], name: str) -> bool:
    """A boolean launch argument, spelled as launch's IfCondition accepts it."""
    text = value[name].strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"launch argument {name}: expected true or false, got {value[name]!r}")


def fully_qualified(namespace: str, name: str) -> str:
    return "/" + "/".join(p for p in (*namespace.strip("/").split("/"), name) if p)


def _node_key_matches(key: str, fqn: str) -> bool:
    """A parameter file's node key against a node's full name, as rclcpp/rclpy match them:
    a leading '/' is implied, '/*' is one name token and '/**' any number of them."""
    key = key if key.startswith("/") else "/" + key
    pattern = re.escape(key).replace(r"/\*\*", r"(/\w+)*").replace(r"/\*", r"(/\w+)")
    return re.fullmatch(pattern, fqn) is not None


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, item in tree.items():
        if isinstance(item, dict):
            out.update(_flatten(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


def file_parameters(params_file: str, fqn: str) -> dict:
    """The parameters a ROS parameter file gives the node `fqn` (dotted names; later blocks win)."""
    if not params_file:
        return {}
    path = Path(params_file)
    if not path.is_file():
        raise FileNotFoundError(f"launch argument params_file: {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"launch argument params_file: {path} is not a ROS parameter file")
    values: dict = {}
    for key, block in data.items():
        parameters = block.get("ros__parameters") if isinstance(block, dict) else None
        if isinstance(parameters, dict) and _node_key_matches(str(key), fqn):
            values.update(_flatten(parameters))
    return values


def effective_parameters(params_file: str, fqn: str, given: dict[str, str]) -> dict[str, str]:
    """What fusion_node will run with for each of NODE_PARAMETERS: the given argument, else the
    file's value, else the node's default."""
    from_file = file_parameters(params_file, fqn)
    return {
        name: str(given.get(name, from_file.get(name, default)))
        for name, default in NODE_PARAMETERS.items()
    }


def absolute(namespace: str, topic: str) -> str:
    """rviz and the recorder get absolute names, resolved as the node resolves its topics."""
    if topic.startswith("/"):
        return topic
    return "/" + "/".join(p.strip("/") for p in (namespace, topic) if p.strip("/"))


def rviz_config(template: Path, namespace: str, used: dict[str, str]) -> str:
    """A copy of the rviz config whose image displays show the topics in use (rviz configs take
    no launch arguments), in a temporary file removed when the launch ends."""
    config = yaml.safe_load(template.read_text())
    for display in config["Visualization Manager"]["Displays"]:
        topic = RVIZ_DISPLAYS.get(display.get("Name"))
        if topic is not None:
            display["Topic"]["Value"] = absolute(namespace, topic.format(**used))
    fd, path = tempfile.mkstemp(prefix="fusion_uav_", suffix=".rviz")
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return path


def camera_info(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport convention)."""
    parent = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{parent}/camera_info" if parent else "camera_info"


def recorder(value: dict[str, str], used: dict[str, str]) -> ExecuteProcess:
    """`ros2 bag record` of what is needed to rebuild a dataset from the flight (mcap storage)."""
    ns = value["namespace"]
    rgb, thermal = used["rgb_topic"], used["thermal_topic"]
    topics = [
        absolute(ns, rgb),
        absolute(ns, thermal),
        absolute(ns, camera_info(rgb)),
        absolute(ns, camera_info(thermal)),
        absolute(ns, f"{NODE_NAME}/label_info"),
        "/tf_static",
        "/diagnostics",
    ]
    # One folder per flight: `ros2 bag record` refuses an output folder that already exists.
    output = str(Path(value["bag_dir"]) / time.strftime("fusion_%Y%m%d_%H%M%S"))
    cmd = ["ros2", "bag", "record", "--storage", "mcap", "--output", output, *dict.fromkeys(topics)]
    return ExecuteProcess(cmd=cmd, output="screen")
