"""The node's parameters in one table: name, default, description, constraint.

Every parameter is declared with a descriptor (visible in `ros2 param describe`) and validated once at
start-up; a bad value raises an error naming the parameter. The same table is checked against
config/uav.yaml and the launch file by the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from fusion_perception.backends import BACKEND_CHOICES
from fusion_perception.compensation import FUSION_TASKS
from fusion_perception.live import FALLBACKS, PAIR_POLICIES
from fusion_perception.pairing import SyncConfig
from fusion_perception.settings import from_prefixed
from fusion_perception.thermal import ThermalConfig
from fusion_perception.tracking import TrackerConfig


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    read_only: bool = False


RELIABILITY = ("best_effort", "reliable")
# parameter prefix -> the settings dataclass its parameters are generated from
SETTINGS: dict[str, type] = {
    "sync": SyncConfig,
    "thermal": ThermalConfig,
    "tracking": TrackerConfig,
}


def settings_params(prefix: str, cls: type, read_only: bool = False) -> list[ParamSpec]:
    """``<prefix>.<field>`` for each field of a settings dataclass (`fusion_perception.settings`):
    its default, help text, range and choices."""
    return [
        ParamSpec(
            f"{prefix}.{f.name}",
            f.default,
            f.metadata["help"],
            f.metadata["choices"],
            low=f.metadata["low"],
            high=f.metadata["high"],
            read_only=read_only,
        )
        for f in dataclasses.fields(cls)
    ]


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("rgb_topic", "rgb/image", "RGB camera topic (sensor_msgs/Image or CompressedImage)"),
    ParamSpec(
        "thermal_topic",
        "thermal/image",
        "thermal camera topic (sensor_msgs/Image or, with thermal_compressed, CompressedImage)",
    ),
    ParamSpec("rgb_compressed", False, "subscribe to the RGB topic as sensor_msgs/CompressedImage"),
    ParamSpec(
        "thermal_compressed",
        False,
        "subscribe to the thermal topic as sensor_msgs/CompressedImage (16-bit PNG, as "
        "compressed_image_transport writes it)",
    ),
    ParamSpec(
        "rgb_camera_info_topic",
        "",
        "RGB sensor_msgs/CameraInfo; empty = the image topic's sibling (rgb/image -> "
        "rgb/camera_info, as image_transport names it)",
    ),
    ParamSpec("rgb_qos.reliability", "best_effort", "RGB subscription reliability", RELIABILITY),
    ParamSpec("rgb_qos.depth", 2, "RGB subscription history depth", low=1, high=100),
    ParamSpec("thermal_qos.reliability", "best_effort", "thermal reliability", RELIABILITY),
    ParamSpec("thermal_qos.depth", 2, "thermal subscription history depth", low=1, high=100),
    ParamSpec(
        "sync.backend",
        "builtin",
        "who pairs the streams: builtin (fusion_perception.pairing: drop counting, fallback) or "
        "message_filters (its ApproximateTimeSynchronizer / TimeSynchronizer; apt ROS only)",
        ("builtin", "message_filters"),
        read_only=True,
    ),
    *settings_params("sync", SyncConfig),
    *settings_params("thermal", ThermalConfig),
    ParamSpec("calibration_file", "", "thermal->RGB homography YAML; empty = same size, aligned"),
    ParamSpec(
        "checkpoint", "", "model checkpoint; empty = the packaged demo model", read_only=True
    ),
    ParamSpec(
        "fusion_task",
        "viewer",
        "who the fused image is for: viewer (the fusion network's own image) or detector (a "
        "trained task compensation customises it for a downstream detector, see compensation; "
        "the fusion network is not retrained)",
        FUSION_TASKS,
        read_only=True,
    ),
    ParamSpec(
        "compensation",
        "",
        "task compensation file (fusion-train-compensation) for fusion_task detector; empty = "
        "the packaged one (for the packaged model and a visible-only detector)",
        read_only=True,
    ),
    ParamSpec("device", "auto", "auto, cpu, cuda or cuda:N", read_only=True),
    ParamSpec("fp16", True, "half precision when running on CUDA", read_only=True),
    ParamSpec(
        "backend",
        "auto",
        "who runs the network: auto = fastest installed for the device (CUDA: tensorrt, else "
        "torch; CPU: openvino, onnxruntime, torch)",
        BACKEND_CHOICES,
        read_only=True,
    ),
    ParamSpec(
        "backend_artifact",
        "",
        "file exported for backend by fusion-export; empty = export the checkpoint on first "
        "start into $FUSION_PERCEPTION_CACHE (else ~/.cache/fusion_perception)",
        read_only=True,
    ),
    ParamSpec(
        "score_threshold",
        0.3,
        "minimum detection score (calibrated by fusion-calibrate where the checkpoint has a "
        "calibration: then an estimate of the chance a box is right)",
        low=0.0,
        high=1.0,
    ),
    ParamSpec("nms_threshold", 0.5, "IoU above which NMS suppresses a box", low=0.01, high=1.0),
    ParamSpec("max_detections", 100, "detections kept per image", low=1, high=1000),
    ParamSpec(
        "classes",
        "",
        "comma-separated class names to publish (e.g. person,car); empty = all the model's",
        read_only=True,
    ),
    ParamSpec("agnostic_nms", False, "NMS across classes: one box per object", read_only=True),
    ParamSpec(
        "tracking.enabled",
        False,
        "persistent object ids in Detection2D.id (IoU tracker)",
        read_only=True,
    ),
    *settings_params("tracking", TrackerConfig, read_only=True),
    ParamSpec("publish.fused", True, "publish ~/fused/image"),
    ParamSpec("publish.detections", True, "publish ~/detections"),
    ParamSpec("publish.annotated", True, "publish ~/detections/image when someone subscribes"),
    ParamSpec("fused_encoding", "bgr8", "fused image encoding", ("bgr8", "mono8")),
    ParamSpec("camera_timeout", 1.0, "a camera silent this long (s) is reported", low=0.05),
    ParamSpec(
        "fallback",
        "none",
        "when one camera is silent: none (wait), rgb_only or thermal_only (run on the other)",
        FALLBACKS,
    ),
    ParamSpec(
        "pair_policy",
        "fresh",
        "the pair the worker takes when it frees: fresh (a pair older than half a camera period "
        "waits, at most a period, for the next one: lower latency) or newest (the newest at once: "
        "higher output rate)",
        PAIR_POLICIES,
        read_only=True,
    ),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", low=0.1),
    ParamSpec(
        "autostart",
        True,
        "configure and activate at start-up (false: wait for a lifecycle manager)",
        read_only=True,
    ),
)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    constraints = f"one of: {', '.join(spec.choices)}" if spec.choices else ""
    desc = ParameterDescriptor(
        description=spec.description, additional_constraints=constraints, read_only=spec.read_only
    )
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=spec.low, to_value=spec.high)
            ]
    return desc


def check(spec: ParamSpec, value: Any) -> None:
    """Raise ValueError naming the parameter when `value` breaks its constraint."""
    if spec.choices and value not in spec.choices:
        raise ValueError(f"parameter {spec.name}: {value!r} is not one of {list(spec.choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.low is not None and value < spec.low:
            raise ValueError(f"parameter {spec.name}: {value} is below {spec.low}")
        if spec.high is not None and value > spec.high:
            raise ValueError(f"parameter {spec.name}: {value} is above {spec.high}")


def declare_and_read(node: Node) -> dict[str, Any]:
    """Declare every parameter, read it once, validate it; returns name -> value."""
    values = {}
    for spec in PARAMS:
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            raise ValueError(f"parameter {spec.name}: {exc}") from None
        check(spec, value)
        values[spec.name] = value
    if values["sync.backend"] == "message_filters" and values["fallback"] != "none":
        raise ValueError(
            "parameter sync.backend: message_filters passes only matched pairs, so fallback "
            f"{values['fallback']!r} could never run; use sync.backend builtin or fallback none"
        )
    for prefix, cls in SETTINGS.items():
        try:
            from_prefixed(cls, values, prefix)  # the checks across fields
        except ValueError as exc:
            raise ValueError(f"parameter {exc}") from None
    return values


SPECS = {spec.name: spec for spec in PARAMS}


def settings(values: dict[str, Any], prefix: str) -> Any:
    """The settings dataclass behind the ``<prefix>.*`` parameters, from their values."""
    return from_prefixed(SETTINGS[prefix], values, prefix)


def class_list(value: str) -> list[str] | None:
    """``classes`` ("person, car") -> names; None when empty (every class)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def camera_info_topic(values: dict[str, Any]) -> str:
    """The RGB camera's CameraInfo topic: the parameter, else the image topic's sibling."""
    if values["rgb_camera_info_topic"]:
        return values["rgb_camera_info_topic"]
    base = values["rgb_topic"]
    if values["rgb_compressed"] and base.endswith("/compressed"):
        base = base[: -len("/compressed")]  # image_transport's transport suffix
    parent, _, _ = base.rpartition("/")
    return f"{parent}/camera_info" if parent else "camera_info"
