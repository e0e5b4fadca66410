"""The launch file, config/uav.yaml, config/uav.rviz, package.xml and the node's declared parameters
agree.

`launch` and `launch_ros` are not installable here, so the launch file is loaded against small
stand-ins for their classes that only record what they are given; its own logic (which arguments
become overrides, which topics rviz and the recorder get) then runs for real. How ROS merges the
parameter files it produces is emulated as rclpy does it: files in order, later values win.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from fusion_perception.ros.params import PARAMS

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "uav.launch.py"

DECLARED = {spec.name for spec in PARAMS}
DEFAULTS = {spec.name: spec.default for spec in PARAMS}


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# ------------------------------------------------------------------ stand-ins for launch classes


class Recorded:
    """Any launch action: keeps its arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context) -> str:
        return context.launch_configurations[self.name]


class LaunchContext:
    def __init__(self) -> None:
        self.launch_configurations: dict[str, str] = {}


class LaunchDescription:
    def __init__(self, entities) -> None:
        self.entities = list(entities)


def _kind(name: str) -> type:
    return type(name, (Recorded,), {})


@pytest.fixture
def uav_launch(monkeypatch):
    """The launch file as a module, with the stand-ins and the repository as its share folder."""
    import ament_index_python.packages as ament

    launch = types.ModuleType("launch")
    launch.LaunchContext, launch.LaunchDescription = LaunchContext, LaunchDescription
    actions = types.ModuleType("launch.actions")
    for name in (
        "DeclareLaunchArgument",
        "EmitEvent",
        "ExecuteProcess",
        "GroupAction",
        "OpaqueFunction",
        "RegisterEventHandler",
    ):
        setattr(actions, name, _kind(name))
    events = types.ModuleType("launch.events")
    events.matches_action = lambda action: ("matches", action)
    ros_handlers = types.ModuleType("launch_ros.event_handlers")
    ros_handlers.OnStateTransition = _kind("OnStateTransition")
    ros_events = types.ModuleType("launch_ros.events")
    ros_lifecycle = types.ModuleType("launch_ros.events.lifecycle")
    ros_lifecycle.ChangeState = _kind("ChangeState")
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node, ros_actions.PushRosNamespace = _kind("Node"), _kind("PushRosNamespace")
    ros_actions.LifecycleNode = _kind("LifecycleNode")
    modules = {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": substitutions,
        "launch.events": events,
        "launch_ros.event_handlers": ros_handlers,
        "launch_ros.events": ros_events,
        "launch_ros.events.lifecycle": ros_lifecycle,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(ament, "get_package_share_directory", lambda package: str(REPO))
    spec = importlib.util.spec_from_file_location("uav_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_launch(module, **given: str) -> list[Recorded]:
    """Every action the launch file starts with the launch arguments `given` (flattened)."""
    description = module.generate_launch_description()
    context = LaunchContext()
    opaque = []
    for entity in description.entities:
        if type(entity).__name__ == "DeclareLaunchArgument":
            name = entity.args[0]
            context.launch_configurations[name] = entity.kwargs["default_value"]
        else:
            opaque.append(entity)
    unknown = set(given) - set(context.launch_configurations)
    assert not unknown, f"not launch arguments: {unknown}"
    context.launch_configurations.update(given)
    out: list[Recorded] = []
    for entity in opaque:
        for action in entity.kwargs["function"](context):
            out.append(action)
            if type(action).__name__ == "GroupAction":
                out.extend(action.args[0])
    return out


def node(actions: list[Recorded], executable: str) -> Recorded:
    (found,) = [
        a
        for a in actions
        if type(a).__name__ in ("Node", "LifecycleNode")
        and a.kwargs.get("executable") == executable
    ]
    return found


def namespace(actions: list[Recorded]) -> str:
    (push,) = [a for a in actions if type(a).__name__ == "PushRosNamespace"]
    return push.args[0]


def parameters_at_run_time(actions: list[Recorded]) -> dict:
    """fusion_node's parameters as rclpy would set them: declared defaults, then each
    parameter file in order (blocks for '/**' or this node), then the override dicts."""
    fusion = node(actions, "fusion_node")
    ns = namespace(actions).strip("/")
    names = {"/**", f"/{ns}/fusion_node"} if ns else {"/**", "fusion_node", "/fusion_node"}
    values = dict(DEFAULTS)
    for entry in fusion.kwargs["parameters"]:
        if isinstance(entry, dict):
            values.update(entry)
            continue
        for key, block in yaml.safe_load(Path(entry).read_text()).items():
            if key in names:
                values.update(flatten(block["ros__parameters"]))
    return values


def rviz_topics(actions: list[Recorded]) -> dict[str, str]:
    rviz = node(actions, "rviz2")
    flag, path = rviz.kwargs["arguments"]
    assert flag == "-d" and Path(path).is_file() and Path(path).suffix == ".rviz"
    config = yaml.safe_load(Path(path).read_text())
    return {d["Name"]: d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}


def recorded_topics(actions: list[Recorded]) -> list[str]:
    (record,) = [a for a in actions if type(a).__name__ == "ExecuteProcess"]
    cmd = record.kwargs["cmd"]
    assert cmd[:5] == ["ros2", "bag", "record", "--storage", "mcap"]
    return cmd[7:]


@pytest.fixture
def rig_params(tmp_path) -> Path:
    """The user's parameter file: uav.yaml with the rig's topics and device, for fusion_node."""
    data = yaml.safe_load((REPO / "config" / "uav.yaml").read_text())
    params = data.pop("/**")["ros__parameters"]
    params.update(rgb_topic="/rig/rgb/image_raw", thermal_topic="/rig/ir/image_raw", device="cpu")
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"fusion_node": {"ros__parameters": params}}))
    return path


# ------------------------------------------------------------------------------------ tests


def test_launch_file_compiles() -> None:
    py_compile.compile(str(LAUNCH), doraise=True)


def test_launch_arguments(uav_launch) -> None:
    names = {name for name, _, _ in uav_launch.ARGUMENTS}
    assert {
        "namespace",
        "rgb_topic",
        "thermal_topic",
        "params_file",
        "checkpoint",
        "device",
        "rviz",
        "record",
        "use_synthetic_camera",
        "bag_dir",
    } <= names
    defaults = {name: default for name, default, _ in uav_launch.ARGUMENTS}
    for name in uav_launch.NODE_PARAMETERS:  # '' = not given: the parameter file decides
        assert defaults[name] == ""


def test_overridable_arguments_are_node_parameters_with_the_nodes_defaults(uav_launch) -> None:
    assert set(uav_launch.NODE_PARAMETERS) == {"rgb_topic", "thermal_topic", "checkpoint", "device"}
    assert set(uav_launch.NODE_PARAMETERS) <= DECLARED
    assert {k: DEFAULTS[k] for k in uav_launch.NODE_PARAMETERS} == uav_launch.NODE_PARAMETERS
    yaml_params = flatten(
        yaml.safe_load((REPO / "config" / "uav.yaml").read_text())["/**"]["ros__parameters"]
    )
    assert set(uav_launch.NODE_PARAMETERS) <= set(yaml_params)


def test_defaults_pass_the_packaged_file_and_no_overrides(uav_launch) -> None:
    actions = run_launch(uav_launch)
    # the launch file drives the lifecycle, so the node never starts itself
    assert node(actions, "fusion_node").kwargs["parameters"] == [
        str(REPO / "config" / "uav.yaml"),
        {"autostart": False},
    ]
    assert parameters_at_run_time(actions)["rgb_topic"] == "rgb/image"
    kinds = {type(a).__name__ for a in actions}
    assert "ExecuteProcess" not in kinds  # record:=false
    assert not [a for a in actions if a.kwargs.get("executable") in ("rviz2", "synthetic_camera")]


def test_params_file_wins_when_the_argument_is_not_given(uav_launch, rig_params) -> None:
    actions = run_launch(uav_launch, params_file=str(rig_params), rviz="true", record="true")
    values = parameters_at_run_time(actions)
    assert values["rgb_topic"] == "/rig/rgb/image_raw"
    assert values["thermal_topic"] == "/rig/ir/image_raw"
    assert values["device"] == "cpu"
    assert values["checkpoint"] == ""
    # rviz and the recorder follow the file too
    assert rviz_topics(actions) == {
        "Fused": "/fusion_node/fused/image",
        "Detections": "/fusion_node/detections/image",
        "Thermal (raw)": "/rig/ir/image_raw",
    }
    topics = recorded_topics(actions)
    assert {"/rig/rgb/image_raw", "/rig/ir/image_raw", "/rig/rgb/camera_info"} <= set(topics)


def test_argument_wins_when_given(uav_launch, rig_params, tmp_path) -> None:
    actions = run_launch(
        uav_launch,
        params_file=str(rig_params),
        rgb_topic="/other/rgb",
        checkpoint=str(tmp_path / "model.pt"),
        rviz="true",
        record="true",
        use_synthetic_camera="true",
    )
    fusion = node(actions, "fusion_node")
    assert fusion.kwargs["parameters"][-2] == {
        "rgb_topic": "/other/rgb",
        "checkpoint": str(tmp_path / "model.pt"),
    }
    values = parameters_at_run_time(actions)
    assert values["rgb_topic"] == "/other/rgb"
    assert values["checkpoint"] == str(tmp_path / "model.pt")
    assert values["thermal_topic"] == "/rig/ir/image_raw"  # not given: still the file's
    assert values["device"] == "cpu"
    camera = node(actions, "synthetic_camera")
    assert camera.kwargs["parameters"] == [
        {"rgb_topic": "/other/rgb", "thermal_topic": "/rig/ir/image_raw"}
    ]
    assert "/other/rgb" in recorded_topics(actions)
    assert rviz_topics(actions)["Thermal (raw)"] == "/rig/ir/image_raw"


def test_the_launch_file_configures_then_activates_unless_told_not_to(uav_launch) -> None:
    from lifecycle_msgs.msg import Transition

    actions = run_launch(uav_launch)
    fusion = node(actions, "fusion_node")
    assert type(fusion).__name__ == "LifecycleNode"
    (configure,) = [a for a in actions if type(a).__name__ == "EmitEvent"]
    event = configure.kwargs["event"]
    assert event.kwargs["transition_id"] == Transition.TRANSITION_CONFIGURE
    assert event.kwargs["lifecycle_node_matcher"] == ("matches", fusion)
    (handler,) = [a for a in actions if type(a).__name__ == "RegisterEventHandler"]
    on_inactive = handler.args[0]
    assert on_inactive.kwargs["target_lifecycle_node"] is fusion
    assert on_inactive.kwargs["goal_state"] == "inactive"
    (activate,) = on_inactive.kwargs["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
    # autostart:=false: the node waits, unconfigured, for a lifecycle manager
    manual = run_launch(uav_launch, autostart="false")
    assert not [a for a in manual if type(a).__name__ in ("EmitEvent", "RegisterEventHandler")]
    assert {"autostart": False} in node(manual, "fusion_node").kwargs["parameters"]


def test_namespace_and_a_namespaced_node_block(uav_launch, tmp_path) -> None:
    params = tmp_path / "two_rigs.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"device": "cpu"}},
                "/uav1/fusion_node": {"ros__parameters": {"thermal_topic": "boson/image"}},
                "/uav2/fusion_node": {"ros__parameters": {"thermal_topic": "lepton/image"}},
            }
        )
    )
    actions = run_launch(uav_launch, namespace="uav1", params_file=str(params), rviz="true")
    assert namespace(actions) == "uav1"
    assert parameters_at_run_time(actions)["thermal_topic"] == "boson/image"
    assert rviz_topics(actions) == {
        "Fused": "/uav1/fusion_node/fused/image",
        "Detections": "/uav1/fusion_node/detections/image",
        "Thermal (raw)": "/uav1/boson/image",
    }
    used = uav_launch.effective_parameters(str(params), "/uav2/fusion_node", {})
    assert used["thermal_topic"] == "lepton/image" and used["device"] == "cpu"


@pytest.mark.parametrize(
    ("key", "fqn", "matches"),
    [
        ("/**", "/fusion_node", True),
        ("/**", "/uav1/fusion_node", True),
        ("fusion_node", "/fusion_node", True),
        ("fusion_node", "/uav1/fusion_node", False),
        ("/*/fusion_node", "/uav1/fusion_node", True),
        ("/**/fusion_node", "/a/b/fusion_node", True),
        ("/uav2/fusion_node", "/uav1/fusion_node", False),
        ("/**/camera", "/uav1/fusion_node", False),
    ],
)
def test_node_keys_match_as_ros_matches_them(uav_launch, key, fqn, matches) -> None:
    assert uav_launch._node_key_matches(key, fqn) is matches


def test_bad_flag_and_missing_params_file_are_named(uav_launch, tmp_path) -> None:
    with pytest.raises(ValueError, match="launch argument rviz: expected true or false"):
        run_launch(uav_launch, rviz="yes")
    with pytest.raises(FileNotFoundError, match=r"params_file: .*nope\.yaml does not exist"):
        run_launch(uav_launch, params_file=str(tmp_path / "nope.yaml"))


def test_uav_yaml_matches_declared_parameters() -> None:
    values = flatten(
        yaml.safe_load((REPO / "config" / "uav.yaml").read_text())["/**"]["ros__parameters"]
    )
    assert set(values) == DECLARED
    for spec in PARAMS:
        assert type(values[spec.name]) is type(spec.default), spec.name


def test_rviz_template_has_the_displays_the_launch_file_fills_in(uav_launch) -> None:
    rviz = yaml.safe_load((REPO / "config" / "uav.rviz").read_text())
    displays = {d["Name"]: d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert set(uav_launch.RVIZ_DISPLAYS) == set(displays)
    # the template alone (rviz2 -d config/uav.rviz) shows the default topics
    assert displays == {
        "Fused": "fusion_node/fused/image",
        "Detections": "fusion_node/detections/image",
        "Thermal (raw)": "thermal/image",
    }


def test_package_xml_names_what_the_launch_file_and_clis_use() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for e in root if e.tag in ("exec_depend", "depend")}
    assert {
        "launch",
        "launch_ros",
        "ros2launch",
        "ament_index_python",
        "python3-yaml",
        "rclpy",
        "rcl_interfaces",
        "python3-tqdm",  # fusion-infer
        "python3-matplotlib",  # fusion-demo
        "rviz2",  # rviz:=true
        "ros2bag",  # record:=true
        "rosbag2_storage_mcap",
    } <= exec_depends
    text = (REPO / "package.xml").read_text()
    assert "rviz:=true" in text and "record:=true" in text  # the optional ones are explained
    readme = (REPO / "README.md").read_text()
    assert "--skip-keys" in readme and "rosbag2_storage_mcap" in readme
